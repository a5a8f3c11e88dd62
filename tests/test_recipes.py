"""--recipe: a pair file made from videos trains with the real-video recipe unless the command
line says otherwise; every other file, and --recipe plain, with the listed defaults."""
import numpy as np

import runtime
from benchmarks.real_video import lever_options
from data.schema import write_pair_file
from models.mouth_reader import MIN_FACES
from models.recipes import VIDEO
from tests.conftest import make_pairs

RECIPE_LEVER = "video recipe, D width 32"


def pair_file(folder, source, train_pairs=MIN_FACES):
    rng = np.random.default_rng(0)
    return write_pair_file(folder / f"{source}.h5", {"train": make_pairs(rng, train_pairs, 8000, 16, 2)},
                           ["a", "b"], source=source)


def options_of(*argv) -> dict:
    config = vars(runtime.config_for(["--num_workers", "0", "--precision", "fp32", *map(str, argv)]))
    return {name: value for name, value in config.items() if name != "recipe"}


def test_video_pairs_get_the_measured_recipe_and_others_the_listed_defaults(tmp_path):
    videos, wav2pix = pair_file(tmp_path, "videos"), pair_file(tmp_path, "wav2pix")
    chosen = runtime.config_for(["--dataset", str(videos)])
    assert chosen.recipe == "video"
    assert {name: getattr(chosen, name) for name in VIDEO} == VIDEO
    # the default on video is the lever benchmarks/real_video.py measured, option for option
    assert options_of("--dataset", videos) == options_of("--dataset", videos,
                                                         *lever_options(RECIPE_LEVER))
    listed = options_of("--dataset", videos, "--recipe", "plain")
    assert listed["loss"] == "lsgan" and listed["batch_size"] == 64 and not listed["ema"]
    assert runtime.config_for(["--dataset", str(wav2pix)]).recipe == "plain"
    assert options_of("--dataset", wav2pix) == {**listed, "dataset": str(wav2pix)}
    assert runtime.config_for([]).recipe == "plain"                 # the demo set
    # and --recipe video asks for it on any file
    assert runtime.config_for(["--dataset", str(wav2pix), "--recipe", "video"]).loss == "hinge"


def test_options_given_win_over_the_recipe(tmp_path):
    videos = pair_file(tmp_path, "videos")
    config = runtime.config_for(["--dataset", str(videos), "--loss", "lsgan", "--no_ema",
                                 "--batch_size", "64", "--speech_augment", "none"])
    assert (config.loss, config.ema, config.batch_size, config.speech_augment) == \
        ("lsgan", False, 64, "none")
    assert config.speech_encoder == "filterbank_centre" and config.mouth_open_coef == 10


def test_options_a_condition_does_not_read_are_left_out(tmp_path):
    videos = pair_file(tmp_path, "videos")
    config = runtime.config_for(["--dataset", str(videos), "--condition", "none"])
    assert (config.speech_augment, config.speech_encoder, config.mouth_open_coef, config.loss) == \
        ("none", "filterbank", 0, "hinge")


def test_too_few_train_pairs_leave_the_mouth_reader_out(tmp_path, capsys):
    few = pair_file(tmp_path, "videos", train_pairs=MIN_FACES - 1)
    config = runtime.config_for(["--dataset", str(few)])
    assert config.recipe == "video" and config.mouth_open_coef == 0 and config.mouth_coef == 20
    assert f"--mouth_open_coef left at 0: {MIN_FACES - 1} train pairs" in capsys.readouterr().out


def test_rendering_scoring_and_resuming_are_left_as_they_are(tmp_path):
    videos = pair_file(tmp_path, "videos")
    for mode in (["--evaluate"], ["--inference"]):
        config = runtime.config_for(["--dataset", str(videos), *mode])
        assert config.recipe == "auto" and config.loss == "lsgan"
    assert runtime.BEFORE_THEY_EXISTED["recipe"] == "plain"


def test_an_unknown_recipe_is_one_line(capsys):
    assert runtime.main(["--recipe", "fast"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--recipe" in error and "'video'" in error and "\n" not in error
