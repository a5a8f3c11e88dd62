"""How the GAN's per-iteration figures are grouped into plot panels (visdom windows and the
charts of index.html): (title, figure names, logarithmic y axis). A figure named in none of
them gets a panel of its own. The trainer passes this table to utils.Visualizer; the
generator's loss terms come from their declarations (models/loss_terms.py)."""
from models.loss_terms import loss_term_names

GAN_PANELS = (
    ("generator loss (weighted total)", ("g_loss",), False),
    ("generator loss terms", loss_term_names(), True),
    ("discriminator loss", ("d_loss",), False),
    ("D mean scores (targets 0.9 / 0)", ("d_real", "d_fake", "d_wrong"), False),
    ("speaker accuracy (train batches)", ("speaker_acc",), False),
    ("learning rates", ("lr_G", "lr_D"), False),
)
