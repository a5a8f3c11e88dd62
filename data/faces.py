"""Faces in video frames: detect them, follow the speaker's across a clip, align to a template.

Detectors (`--detector`): dlib's HOG frontal-face detector (the default) and OpenCV's
Haar cascade; `benchmarks/prepare_speed.py` measures both on the real fixture faces.
Alignment maps the eye centres of dlib's 68 landmarks onto fixed template positions with
a similarity transform (rotation, one scale, shift), as FFHQ's preparation does with its
eye and mouth points: eyes level, at the same place and distance in every crop.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DETECTORS = ("hog", "haar")
# Both detectors run on a copy whose short side is this long (faces of at least a third of
# it, 80 px, for HOG without upsampling), so detection costs the same on 360p and 4K.
DETECT_SHORT_SIDE = 240
HAAR_SCALE_STEP = 1.15
# Eye centres in wav2pix's own crops (mean over the 100 fixture faces, as fractions of the
# side; the measured left/right heights 0.417/0.405 are levelled), with --margin 0.
TEMPLATE_EYES = np.array([[0.3175, 0.41], [0.6825, 0.41]])
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)  # iBUG 68-point indices, image left/right


def _box_area(box) -> int:
    return box[2] * box[3]


# ---------------------------------------------------------------- detection

class HaarDetector:
    """OpenCV's frontal-face Haar cascade (it ships inside opencv-python-headless)."""

    name = "haar"

    def __init__(self):
        cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade {cascade_path}")

    def detect(self, grey: np.ndarray) -> list:
        min_side = max(24, min(grey.shape) // 8)
        boxes = self.cascade.detectMultiScale(grey, scaleFactor=HAAR_SCALE_STEP, minNeighbors=5,
                                              minSize=(min_side, min_side))
        return [tuple(int(v) for v in box) for box in boxes]


class HogDetector:
    """dlib's HOG + linear SVM frontal-face detector (inside the dlib-bin wheel)."""

    name = "hog"

    def __init__(self):
        import dlib
        self.detector = dlib.get_frontal_face_detector()

    def detect(self, grey: np.ndarray) -> list:
        return [(r.left(), r.top(), r.width(), r.height()) for r in self.detector(grey, 0)]


def make_detector(name: str):
    return {"hog": HogDetector, "haar": HaarDetector}[name]()


def find_faces(detector, frame: np.ndarray) -> list:
    """Boxes (x, y, w, h) in full-frame pixels of every face in an RGB (H, W, 3) frame."""
    scale = min(1.0, DETECT_SHORT_SIDE / min(frame.shape[:2]))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return [tuple(int(round(v / scale)) for v in box) for box in detector.detect(grey)]


# ---------------------------------------------------------------- the speaker's face

class FaceTrack:
    """Follows one face through a clip's sampled frames.

    The first face seen is the largest; later frames take the face nearest the last one.
    A frame is dropped when that face moved more than `max_shift` of its side or changed
    size by more than `max_growth` (a cut: the track moves to the new shot's largest face),
    or when another face is larger (the speaker is not clearly the one in view).
    """

    def __init__(self, max_shift: float = 0.5, max_growth: float = 1.5, max_gap: float = 2.0):
        self.max_shift, self.max_growth, self.max_gap = max_shift, max_growth, max_gap
        self.last, self.last_time = None, None

    def follow(self, boxes: list, time: float):
        """(the speaker's box, None) or (None, why the frame is dropped)."""
        if not boxes:
            return None, "no face"
        largest = max(boxes, key=_box_area)
        lost = self.last is None or time - self.last_time > self.max_gap
        nearest = largest if lost else min(boxes, key=self._distance)
        jumped = not lost and not self._continues(nearest)
        self.last, self.last_time = (largest if jumped else nearest), time
        if jumped:
            return None, "face jumped (cut)"
        if _box_area(largest) > _box_area(nearest):
            return None, "another face larger"
        return nearest, None

    def _distance(self, box) -> float:
        (x, y, w, h), (lx, ly, lw, lh) = box, self.last
        return float(np.hypot(x + w / 2 - lx - lw / 2, y + h / 2 - ly - lh / 2))

    def _continues(self, box) -> bool:
        growth = box[2] / self.last[2]
        return (self._distance(box) <= self.max_shift * self.last[2]
                and 1 / self.max_growth <= growth <= self.max_growth)


# ---------------------------------------------------------------- landmarks and alignment

def landmark_model_file() -> Path:
    """dlib's 68-point predictor from face-recognition-models, found without importing it
    (its __init__ needs pkg_resources, which setuptools >= 81 lacks)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / \
        "shape_predictor_68_face_landmarks.dat"


class Landmarks:
    """dlib's 68-point shape predictor."""

    def __init__(self):
        import dlib
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(landmark_model_file()))

    def eyes(self, frame: np.ndarray, box):
        """Eye centres ((2, 2): image-left eye, image-right eye) of the face in `box`, or
        None where the landmarks do not look like a face in that box."""
        x, y, w, h = box
        shape = self.predictor(frame, self._dlib.rectangle(x, y, x + w - 1, y + h - 1))
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)  # (68, 2)
        eyes = np.stack([points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)])
        distance = np.linalg.norm(eyes[1] - eyes[0])
        plausible = 0.2 * w <= distance <= 0.7 * w and eyes[1, 0] > eyes[0, 0]
        return eyes if plausible else None


def template_eyes(size: int, margin: float) -> np.ndarray:
    """Where the eye centres go in a (size, size) crop: wav2pix's framing, with `margin` of
    the side added on every edge (the face shrinks towards the centre)."""
    return (0.5 + (TEMPLATE_EYES - 0.5) / (1 + 2 * margin)) * size


def similarity_to(eyes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) taking the two points `eyes`
    exactly onto the two points `target`."""
    source, goal = eyes[1] - eyes[0], target[1] - target[0]
    # as complex numbers the map is z -> a z + b, with a = goal / source
    a = complex(*goal) / complex(*source)
    rotation = np.array([[a.real, -a.imag], [a.imag, a.real]])
    shift = target[0] - rotation @ eyes[0]
    return np.hstack([rotation, shift[:, None]])


def aligned_crop(frame: np.ndarray, eyes: np.ndarray, size: int, margin: float) -> np.ndarray:
    """uint8 (size, size, 3): the frame warped so the eyes sit on the template."""
    matrix = similarity_to(eyes, template_eyes(size, margin))
    scale = float(np.hypot(*matrix[:, 0]))
    if scale < 0.5:  # shrink with area averaging first: warpAffine alone would alias
        factor = min(1.0, 2 * scale)
        frame = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / factor, 1 / factor, 1.0])
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def box_crop(frame: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """A square around `box` grown by `margin` x its side on every edge, moved inside the
    frame where it would cross an edge, resized to (size, size, 3)."""
    x, y, w, h = box
    height, width = frame.shape[:2]
    side = min(int(round(max(w, h) * (1 + 2 * margin))), height, width)
    left = int(np.clip(x + w / 2 - side / 2, 0, width - side))
    top = int(np.clip(y + h / 2 - side / 2, 0, height - side))
    square = frame[top:top + side, left:left + side]
    shrink = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=shrink)


# ---------------------------------------------------------------- one frame to one crop

@dataclass(frozen=True)
class FaceSettings:
    detector: str = "hog"
    align: bool = True
    face_size: int = 128
    margin: float = 0.1


class FaceCropper:
    """Detector, track and aligner for one clip at a time (`start_clip` between clips)."""

    def __init__(self, settings: FaceSettings):
        self.settings = settings
        self.detector = make_detector(settings.detector)
        self.landmarks = Landmarks() if settings.align else None
        self.track = FaceTrack()

    def start_clip(self) -> None:
        self.track = FaceTrack()

    def boxes(self, frame: np.ndarray) -> list:
        return find_faces(self.detector, frame)

    def crop(self, frame: np.ndarray, time: float):
        """(uint8 (S, S, 3) crop, None) or (None, why the frame is dropped)."""
        box, dropped = self.track.follow(self.boxes(frame), time)
        if dropped:
            return None, dropped
        size, margin = self.settings.face_size, self.settings.margin
        if self.landmarks is None:
            return box_crop(frame, box, margin, size), None
        eyes = self.landmarks.eyes(frame, box)
        if eyes is None:
            return None, "no landmarks"
        return aligned_crop(frame, eyes, size, margin), None

    def align_still(self, face: np.ndarray):
        """A tight face crop (wav2pix's) aligned: (crop, None) or (None, why not)."""
        pad = face.shape[0] // 4  # tight crops cut the jaw: give the detector room
        canvas = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes = self.boxes(canvas)
        if not boxes:
            return None, "no face (align)"
        eyes = self.landmarks.eyes(canvas, max(boxes, key=_box_area))
        if eyes is None:
            return None, "no landmarks"
        return aligned_crop(canvas, eyes, self.settings.face_size, self.settings.margin), None
