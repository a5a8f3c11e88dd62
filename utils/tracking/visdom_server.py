"""visdom's page, offline: the third-party files its server would fetch from CDNs, installed
once from npm, and the server started on this machine."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from utils.errors import UserError
from utils.files import write_atomically

_BOOTSTRAP_FONTS = {f"dist/fonts/glyphicons-halflings-regular.{ext}":
                    f"fonts/glyphicons-halflings-regular.{ext}"
                    for ext in ("eot", "woff2", "woff", "ttf")}
_MATHJAX_FILES = ("MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js",
                  "extensions/Safe.js", "jax/output/SVG/jax.js", "jax/output/SVG/config.js",
                  "jax/output/SVG/fonts/TeX/fontdata.js",
                  "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js")
# The third-party files of visdom 0.2.4's page, which its server downloads from CDNs on
# first start (visdom/server/build.py) and cannot fetch offline. Each comes from an npm
# package: {package: {file in the package: file under visdom/static, as build.py names it}}.
DASHBOARD_ASSETS = {
    "jquery@3.1.1": {"dist/jquery.min.js": "js/jquery.min.js"},
    "bootstrap@3.3.7": {
        "dist/js/bootstrap.min.js": "js/bootstrap.min.js",
        "dist/css/bootstrap.min.css": "css/bootstrap.min.css", **_BOOTSTRAP_FONTS,
        # build.py keeps the URL's fragment in this file name
        "dist/fonts/glyphicons-halflings-regular.svg":
            "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"},
    "react@16.2.0": {"umd/react.production.min.js": "js/react-react.min.js"},
    "react-dom@16.2.0": {"umd/react-dom.production.min.js": "js/react-dom.min.js"},
    "react-modal@3.1.10": {"dist/react-modal.min.js": "js/react-modal.min.js"},
    "plotly.js-dist-min@2.11.1": {"plotly.min.js": "js/plotly-plotly.min.js"},
    "sjcl@1.0.7": {"sjcl.js": "js/sjcl.js"},
    "layout-bin-packer@1.4.0": {"dist/layout-bin-packer.js": "js/layout_bin_packer.js",
                                "dist/layout-bin-packer.js.map": "js/layout-bin-packer.js.map"},
    "d3@3.5.17": {"d3.min.js": "js/d3.v3.min.js"},
    "d3-selection-multi@1.0.1": {"build/d3-selection-multi.js": "js/d3-selection-multi.v1.js"},
    "save-svg-as-png@1.4.17": {"lib/saveSvgAsPng.js": "js/saveSvgAsPng.js"},
    "react-resizable@1.4.6": {"css/styles.css": "css/react-resizable-styles.css"},
    "react-grid-layout@0.16.3": {"css/styles.css": "css/react-grid-layout-styles.css"},
    "classnames@2.2.5": {"index.js": "fonts/classnames"},
    "mathjax@2.7.5": {name: f"js/mathjax/2.7.5/{name}" for name in _MATHJAX_FILES},
}


def visdom_static_dir() -> Path:
    import visdom
    return Path(visdom.__file__).parent / "static"


def missing_dashboard_assets(static: Path) -> list[str]:
    """Asset files absent from visdom's static folder; with `version.built` holding visdom's
    version and none absent, its server starts without a network call."""
    import visdom
    built = static / "version.built"
    missing = [target for files in DASHBOARD_ASSETS.values() for target in files.values()
               if not (static / target).is_file()]
    if not built.is_file() or built.read_text().strip() != visdom.__version__:
        missing.append("version.built")
    return missing


def install_dashboard_assets() -> bool:
    """Copy visdom's page assets from npm packages into its static folder if any is
    missing; return whether anything was installed."""
    import visdom
    static = visdom_static_dir()
    if not missing_dashboard_assets(static):
        return False
    if not os.access(static, os.W_OK):
        raise UserError(f"visdom's folder {static} is read-only; run this once as a user who "
                        "can write there (it adds visdom's JavaScript)")
    print(f"installing visdom's JavaScript and CSS from npm into {static} (once)")
    with tempfile.TemporaryDirectory() as folder:
        tarballs = npm_pack(list(DASHBOARD_ASSETS), folder)
        for spec, tarball in tarballs.items():
            with tarfile.open(Path(folder) / tarball) as archive:
                for inside, target in DASHBOARD_ASSETS[spec].items():
                    data = archive.extractfile(f"package/{inside}").read()
                    write_atomically(static / target, data)
    write_atomically(static / "version.built", visdom.__version__.encode())
    return True


def npm_pack(specs: list[str], folder: str) -> dict[str, str]:
    """Download npm packages as tarballs into `folder` (no node_modules, no scripts run);
    returns {"name@version": tarball file name}."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("visdom's page needs JavaScript from the npm registry but npm is not "
                        "installed; install Node.js and npm (Debian: apt-get install npm)")
    result = subprocess.run([npm, "pack", "--json", "--ignore-scripts", *specs], cwd=folder,
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = next((line for line in result.stderr.splitlines() if "ERR" in line),
                      result.stderr.strip()[:200])
        raise UserError(f"npm could not fetch visdom's JavaScript ({reason}); check that the "
                        "npm registry is reachable and try again")
    return {f"{package['name']}@{package['version']}": package["filename"]
            for package in json.loads(result.stdout)}


def serve_dashboard(port: int) -> None:
    """Install visdom's page assets if missing, then become a visdom server on 127.0.0.1."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} is taken (a visdom server may already run there: open "
                            f"http://localhost:{port}); choose another --visdom_port") from None
    install_dashboard_assets()
    print(f"visdom dashboard: open http://localhost:{port} (this machine only; from another "
          f"one, `ssh -L {port}:localhost:{port} <this machine>` first)", flush=True)
    command = [sys.executable, "-m", "visdom.server", "-port", str(port), "-bind_local"]
    os.execv(sys.executable, command)
