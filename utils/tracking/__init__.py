"""What a run shows: the Visualizer, the live outputs of --log_to behind it, the run's
index.html, and visdom's own page installed for offline use."""
from utils.tracking.figures import SMOOTHING, SmoothedCurve, panels_for, window_id
from utils.tracking.protocol import Sink, SteppedSink
from utils.tracking.run_page import (CHART_POINTS, ChartFrame, audio_players, current_run_records,
                                     svg_chart, write_run_page)
from utils.tracking.sinks import LOG_TO, SINKS, live_sinks, log_to_help
from utils.tracking.tensorboard_sink import TensorBoardSink
from utils.tracking.visdom_server import (DASHBOARD_ASSETS, install_dashboard_assets,
                                          missing_dashboard_assets, npm_pack, serve_dashboard,
                                          visdom_static_dir)
from utils.tracking.visdom_sink import PLOT_SECONDS, VisdomSink, quiet_visdom_client
from utils.tracking.visualizer import Visualizer
from utils.tracking.wandb_sink import WandbSink, wandb_logged_in
