"""A stand-in for insightface's ``buffalo_l/det_10g.onnx`` (SCRFD-10G), built with the ``onnx`` package.

The real detector cannot be downloaded here, so tests use a tiny ONNX graph with the same interface: one
input ``[1, 3, ?, ?]`` and nine outputs -- face scores ``[N, 1]``, box distances ``[N, 4]`` and 5-point
keypoint offsets ``[N, 10]`` for the strides 8, 16 and 32, with two anchors per location
(``N = (H / s) * (W / s) * 2``), in that order. insightface recognises it as an SCRFD model by itself and
decodes its outputs with its own code, so everything from model loading to keypoint decoding runs for real.

Instead of looking at faces, the graph places the faces listed in ``faces`` (positions as fractions of the
detector's input width and height) on the anchor grid of the input it is given, so the outputs fit any input
size. An input whose mean value is near black (normalised mean below -0.9) has no face: tests use black
frames for "no face here".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

STRIDES = (8, 16, 32)
ANCHORS = 2


@dataclass(frozen=True)
class FakeFace:
    """A face in fractions of the detector input: box (x1, y1, x2, y2), 5 keypoints (x, y), score, stride."""

    box: tuple[float, float, float, float]
    kps: tuple[tuple[float, float], ...]
    score: float = 0.9
    stride: int = 32

    def absolute_kps(self, width: int, height: int) -> np.ndarray:
        """The 5 keypoints in pixels of a ``width`` x ``height`` image (float32 [5, 2])."""
        return (np.asarray(self.kps, np.float64) * [width, height]).astype(np.float32)

    def absolute_box(self, width: int, height: int) -> np.ndarray:
        return (np.asarray(self.box, np.float64) * [width, height, width, height]).astype(np.float32)


# The hand-placed parity reference kps (astronaut_ref_kps_64.json, 64x64 pixels) plus two mouth corners.
DEFAULT_FACE = FakeFace(
    box=(16 / 64, 12 / 64, 48 / 64, 48 / 64),
    kps=((26.73 / 64, 25.31 / 64), (37.62 / 64, 25.83 / 64), (31.77 / 64, 31.93 / 64), (27.9 / 64, 38.2 / 64),
         (36.1 / 64, 38.6 / 64)),
    score=0.9,
    stride=32,
)
# A smaller face with a higher score, away from DEFAULT_FACE (for "largest" vs "highest score" selection).
SMALL_CONFIDENT_FACE = FakeFace(
    box=(0.78, 0.78, 0.96, 0.96),
    kps=((0.82, 0.84), (0.92, 0.84), (0.87, 0.88), (0.83, 0.92), (0.91, 0.92)),
    score=0.97,
    stride=16,
)


def _build_graph(faces: tuple[FakeFace, ...]):  # -> onnx.ModelProto
    from onnx import TensorProto, helper

    nodes, inits = [], []

    def const(name: str, value, dtype=np.float32) -> str:
        array = np.asarray(value, dtype=dtype)
        inits.append(helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape,
                                        array.flatten().tolist()))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    shape = node("Shape", ["input.1"], "shape")
    height = node("Gather", [shape, const("i2", 2, np.int64)], "height")  # 0-d int64
    width = node("Gather", [shape, const("i3", 3, np.int64)], "width")
    height_f = node("Cast", [height], "height_f", to=TensorProto.FLOAT)
    width_f = node("Cast", [width], "width_f", to=TensorProto.FLOAT)
    size_xy = node("Concat", [node("Unsqueeze", [width_f, const("ax0", [0], np.int64)], "w1"),
                              node("Unsqueeze", [height_f, "ax0"], "h1")], "size_xy", axis=0)  # [2]
    # No face in a near-black input.
    mean = node("ReduceMean", ["input.1"], "mean", keepdims=0)
    gate = node("Cast", [node("Greater", [mean, const("black", -0.9)], "bright")], "gate", to=TensorProto.FLOAT)

    outputs = {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        s = f"s{stride}"
        stride_i = const(f"{s}_i", stride, np.int64)
        stride_f = f"{s}_f"
        rows = node("Div", [height, stride_i], f"{s}_rows")
        cols = node("Div", [width, stride_i], f"{s}_cols")
        count = node("Mul", [node("Mul", [rows, cols], f"{s}_cells"), const(f"{s}_a", ANCHORS, np.int64)],
                     f"{s}_count")
        index = node("Range", [const(f"{s}_zero", 0, np.int64), count, const(f"{s}_one", 1, np.int64)],
                     f"{s}_index")
        score_sum = bbox_sum = kps_sum = None
        for number, face in enumerate(f for f in faces if f.stride == stride):
            p = f"{s}_f{number}"
            if number == 0:
                const(stride_f, float(stride))
            centre = node("Mul", [const(f"{p}_c", [(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2]),
                                  size_xy], f"{p}_centre")  # [2] pixels
            cell = node("Cast", [node("Floor", [node("Div", [centre, stride_f], f"{p}_cd")], f"{p}_cf")],
                        f"{p}_cell", to=TensorProto.INT64)  # [col, row]
            col = node("Gather", [cell, const(f"{p}_g0", 0, np.int64)], f"{p}_col")
            row = node("Gather", [cell, const(f"{p}_g1", 1, np.int64)], f"{p}_row")
            anchor_index = node("Mul", [node("Add", [node("Mul", [row, cols], f"{p}_rc"), col], f"{p}_loc"),
                                        const(f"{p}_two", ANCHORS, np.int64)], f"{p}_k")
            onehot = node("Cast", [node("Equal", [index, anchor_index], f"{p}_eq")], f"{p}_oh", to=TensorProto.FLOAT)
            onehot = node("Unsqueeze", [onehot, const(f"{p}_ax1", [1], np.int64)], f"{p}_onehot")  # [N, 1]
            anchor = node("Mul", [node("Cast", [cell], f"{p}_cellf", to=TensorProto.FLOAT), stride_f], f"{p}_anchor")
            # Box distances (left, top, right, bottom) from the anchor centre, in strides.
            box_xy = node("Mul", [const(f"{p}_box", np.reshape(face.box, (2, 2))), size_xy], f"{p}_boxpx")  # [2, 2]
            box_d = node("Mul", [node("Sub", [box_xy, anchor], f"{p}_bd0"), const(f"{p}_sign", [[-1, -1], [1, 1]])],
                         f"{p}_bd1")
            box_d = node("Reshape", [node("Div", [box_d, stride_f], f"{p}_bd2"), const(f"{p}_r14", [1, 4], np.int64)],
                         f"{p}_bd")
            kps_d = node("Div", [node("Sub", [node("Mul", [const(f"{p}_kps", face.kps), size_xy], f"{p}_kpx"), anchor],
                                      f"{p}_kd0"), stride_f], f"{p}_kd1")
            kps_d = node("Reshape", [kps_d, const(f"{p}_r110", [1, 10], np.int64)], f"{p}_kd")
            score = node("Mul", [onehot, node("Mul", [gate, const(f"{p}_score", face.score)], f"{p}_sg")], f"{p}_sc")
            bbox = node("Mul", [onehot, box_d], f"{p}_bb")
            kps = node("Mul", [onehot, kps_d], f"{p}_kk")
            score_sum = score if score_sum is None else node("Add", [score_sum, score], f"{p}_ssum")
            bbox_sum = bbox if bbox_sum is None else node("Add", [bbox_sum, bbox], f"{p}_bsum")
            kps_sum = kps if kps_sum is None else node("Add", [kps_sum, kps], f"{p}_ksum")
        zeros = {w: node("ConstantOfShape", [node("Concat", [node("Unsqueeze", [count, "ax0"], f"{s}_n{w}"),
                                                              const(f"{s}_w{w}", [w], np.int64)],
                                                             f"{s}_shape{w}", axis=0)], f"{s}_zeros{w}",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])) for w in (1, 4, 10)}
        outputs["score"].append(node("Identity", [score_sum or zeros[1]], f"score_{stride}"))
        outputs["bbox"].append(node("Identity", [bbox_sum or zeros[4]], f"bbox_{stride}"))
        outputs["kps"].append(node("Identity", [kps_sum or zeros[10]], f"kps_{stride}"))

    graph_outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{stride}", width])
        for key, width in (("score", 1), ("bbox", 4), ("kps", 10))
        for name, stride in zip(outputs[key], STRIDES)
    ]
    graph = helper.make_graph(
        nodes, "fake_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        graph_outputs, initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="vexpress-tests")
    model.ir_version = 8
    return model


def write_fake_detector(path: Path, faces: tuple[FakeFace, ...] = (DEFAULT_FACE,)) -> Path:
    """Write the stand-in detector ONNX file to ``path``."""
    import onnx

    model = _build_graph(tuple(faces))
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_fake_buffalo_l(root: Path, faces: tuple[FakeFace, ...] = (DEFAULT_FACE,)) -> Path:
    """Write ``<root>/models/buffalo_l/det_10g.onnx`` (the insightface layout) and return the file's path.

    ``root`` is what ``--insightface_model_path`` points at.
    """
    return write_fake_detector(Path(root) / "models" / "buffalo_l" / "det_10g.onnx", faces)
