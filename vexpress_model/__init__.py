"""V-Express talking-head generation: a portrait, speech audio and optional keypoints become a lip-synced video.

The package imports without ComfyUI and does no work at import time. Entry points:

* ``python -m vexpress_model`` -- the command line of the original ``inference.py`` (see ``cli.py``);
* ``python -m vexpress_model.extract_kps`` -- keypoint tracks from a driving video;
* ``python -m vexpress_model.check_model --model_dir DIR`` -- will this model folder load?
"""

__version__ = "0.1.0"
