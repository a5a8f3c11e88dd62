"""Face detectors and dlib's face descriptor, offline.

dlib (the dlib-bin wheel) runs the models that the face-recognition-models package ships:
the HOG frontal-face detector, the 68-point landmark predictor (what wav2pix counted) and
the ResNet that maps an aligned face to a 128-d identity descriptor. The package's model
files are found by path: importing it needs pkg_resources, which setuptools >= 81 lacks.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from utils import UserError

CANVAS_FACE = 128       # faces are drawn at this size on the canvas the detectors see
CANVAS_MARGIN = 32      # replicated border around them: see `detection_canvas`
LANDMARKS = 68
CHIP_SIZE = 150         # dlib's descriptor reads 150 x 150 aligned chips
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "run `pip install -r requirements.txt`"


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise UserError(f"the face metrics need dlib (the dlib-bin wheel); {INSTALL_HINT}") from None
    return dlib


def face_model_file(name: str) -> Path:
    """Path of a model file shipped in face-recognition-models, without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the face metrics need the face-recognition-models package; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall face-recognition-models ({INSTALL_HINT})")
    return path


def detection_canvas(face: np.ndarray) -> np.ndarray:
    """uint8 (S, S, 3) -> uint8 (192, 192, 3): the face at 128 px inside a replicated border.

    Face crops are tight: on real crops dlib places the jaw landmarks just past the frame,
    and HOG misses faces that touch it. The border gives both room without adding content.
    """
    import cv2
    resized = cv2.resize(face, (CANVAS_FACE, CANVAS_FACE), interpolation=cv2.INTER_LINEAR)
    m = CANVAS_MARGIN
    return np.ascontiguousarray(cv2.copyMakeBorder(resized, m, m, m, m, cv2.BORDER_REPLICATE))


class DlibFaces:
    """Detection with all 68 landmarks, and 128-d descriptors, for batches of face crops."""

    name = "dlib HOG frontal face detector + 68-point shape predictor"

    def __init__(self):
        dlib = _import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(face_model_file(
            "shape_predictor_68_face_landmarks.dat")))
        self.recogniser = dlib.face_recognition_model_v1(str(face_model_file(
            "dlib_face_recognition_resnet_model_v1.dat")))

    def _shape(self, canvas: np.ndarray):
        """(found: a face with all 68 landmarks inside the canvas, the landmarks).

        Where no face is found the landmarks are placed in the crop's own box, so every
        image still gets a descriptor (the SF2F protocol scores every generated face).
        """
        boxes = self.detector(canvas, 0)
        m, size = CANVAS_MARGIN, canvas.shape[0]
        box = boxes[0] if boxes else self._dlib.rectangle(m, m, m + CANVAS_FACE - 1,
                                                          m + CANVAS_FACE - 1)
        shape = self.landmarks(canvas, box)
        inside = all(0 <= shape.part(i).x < size and 0 <= shape.part(i).y < size
                     for i in range(LANDMARKS))
        return bool(boxes) and inside, shape

    def analyse(self, faces: np.ndarray, descriptors: bool = True):
        """faces uint8 (N, S, S, 3) -> (found bool (N,), descriptors float32 (N, 128) or None)."""
        found, chips = np.zeros(len(faces), bool), []
        for index, face in enumerate(faces):
            canvas = detection_canvas(face)
            found[index], shape = self._shape(canvas)
            if descriptors:
                chips.append(self._dlib.get_face_chip(canvas, shape, size=CHIP_SIZE))
        if not descriptors:
            return found, None
        return found, self.describe_chips(chips)

    def landmark_points(self, faces: np.ndarray) -> np.ndarray:
        """faces uint8 (N, S, S, 3) -> (N, 68, 2) landmarks on the detection canvas; NaN for
        faces where no face with all 68 landmarks was found."""
        points = np.full((len(faces), LANDMARKS, 2), np.nan, np.float32)
        for index, face in enumerate(faces):
            found, shape = self._shape(detection_canvas(face))
            if found:
                points[index] = [(shape.part(i).x, shape.part(i).y) for i in range(LANDMARKS)]
        return points

    def describe_chips(self, chips: list) -> np.ndarray:
        vectors = self.recogniser.compute_face_descriptor(chips) if chips else []
        return np.asarray([np.asarray(v) for v in vectors], np.float32).reshape(-1, 128)


class HaarFaces:
    """OpenCV's frontal-face Haar cascade: a second, cheaper detector."""

    name = f"OpenCV Haar cascade {HAAR_CASCADE}"

    def __init__(self):
        import cv2
        self._cv2 = cv2
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_CASCADE))
        if self.cascade.empty():
            raise UserError(f"OpenCV has no {HAAR_CASCADE}; opencv-python-headless 4.x ships it "
                            f"({INSTALL_HINT})")

    def found(self, faces: np.ndarray) -> np.ndarray:
        """faces uint8 (N, S, S, 3) -> bool (N,): a face at least half the crop's width."""
        hits = np.zeros(len(faces), bool)
        for index, face in enumerate(faces):
            grey = self._cv2.cvtColor(detection_canvas(face), self._cv2.COLOR_RGB2GRAY)
            boxes = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(CANVAS_FACE // 2, CANVAS_FACE // 2))
            hits[index] = len(boxes) > 0
        return hits
