"""`--recipe`: the option values a kind of data trains best with, as measured; any option
given on the command line wins over its recipe's value.

`auto` (the default) picks by the pair file's `source` attribute (data/schema.py): `video`
for a file made by `python -m data.prepare videos`, `plain` for every other (the demo set,
wav2pix's layout, a file written before the attribute existed). `plain` is each option's
listed default: wav2pix's batch and rates, the filterbank encoder with statistics pooling,
least squares; the demo command adds its four options to it.

Why two: the real-video recipe is the best measured on real talking-head video
(realvids-dev, benchmarks/README.md#real_videopy: at 5,000 steps all four targets on each
of three seeds, mouth sync 0.40-0.43 where the demo command's options alone stay under
0.16), but on the demo set each of its speech options lowers the demo command's mean mouth
sync after 200 steps (the centre encoder 0.38 / 0.40 / 0.36 and the speech augmentation
0.32 / 0.38 / 0.35 against 0.42 / 0.38 / 0.47, seeds 0-2; the whole recipe, with D at 64,
costs identity, 0.89-0.935 against 0.96-0.965; docs/training.md#recipes). The demo draws
its mouths from loudness, which the augmentation's gain hides; real mouths follow the
speech's sounds.

A recipe is one entry of RECIPES; a kind of data picks one by one line of RECIPE_OF_SOURCE.
"""
from __future__ import annotations

from models.mouth_reader import MIN_FACES

VIDEO = {"batch_size": 16, "lr_G": 0.0002, "generator": "hybrid", "ema": True,
         "speech_encoder": "filterbank_centre", "speech_augment": "shift,noise,gain",
         "mouth_open_coef": 10.0, "loss": "hinge", "mouth_coef": 20.0, "d_channels": 32}
RECIPES = {"plain": {}, "video": VIDEO}
RECIPE_OF_SOURCE = {"videos": "video"}
NEEDS_MOUTHS = ("mouth_open_coef",)     # the reader is fitted on at least MIN_FACES mouths
# what only --condition speech uses: its encoder, its windows, and mouths that follow them
NEEDS_SPEECH = ("speech_encoder", "speech_augment", "mouth_open_coef", "mouth_coef")


def recipe_for(requested: str, source: str | None) -> str:
    """The recipe `--recipe requested` means for a pair file made by `source`."""
    if requested != "auto":
        return requested
    return RECIPE_OF_SOURCE.get(source or "", "plain")


def apply_recipe(options, given: set[str], source: str | None, train_pairs: int | None) -> str:
    """Set each option of the recipe that the command line did not give; record the recipe's
    name in options.recipe. `train_pairs`: the train split's size (None: the demo set, which
    has enough). Returns the line that says what was set ('' for none)."""
    name = options.recipe = recipe_for(options.recipe, source)
    values = {option: value for option, value in RECIPES[name].items() if option not in given}
    for option in NEEDS_SPEECH if options.condition != "speech" else ():
        values.pop(option, None)
    too_few = train_pairs is not None and train_pairs < MIN_FACES
    left_out = [option for option in NEEDS_MOUTHS if option in values] if too_few else []
    for option in left_out:
        del values[option]
    for option, value in values.items():
        setattr(options, option, value)
    if not values:
        return ""
    flags = " ".join(f"--{option}" if value is True else f"--{option} {value:g}"
                     if isinstance(value, float) else f"--{option} {value}"
                     for option, value in values.items())
    why = f" (the pair file was made from {source})" if source in RECIPE_OF_SOURCE else ""
    line = (f"recipe {name}{why}: {flags}; options given on the command line win, "
            f"--recipe plain trains with the listed defaults")
    if left_out:
        line += (f"; {', '.join('--' + option for option in left_out)} left at 0: "
                 f"{train_pairs} train pairs, the mouth reader needs {MIN_FACES}")
    return line
