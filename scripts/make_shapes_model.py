#!/usr/bin/env python3
"""Writes a small YOLO-format ONNX detector for the shapes the city simulator renders.

Nothing here is trained: the weights are chosen by hand so that the graph finds the simulator's
people (red upright boxes) and vehicles (blue wide boxes) and regresses their boxes from image
moments. The point is a real ONNX model with a YOLO output layout, run by the real ONNX Runtime,
whose right answers are known from the simulator's ground truth.

    python scripts/make_shapes_model.py --out DIR [--size 320] [--check]

writes DIR/shapes_v8.onnx (output [N, 4 + classes, anchors], YOLOv8/v11 layout) and
DIR/shapes_v5.onnx (output [N, anchors, 5 + classes], YOLOv5 layout). Classes: person, vehicle.

How the graph works, per class c with colour mask m_c (1 where the pixel has the class colour):
  1. pool m_c, m_c*X, m_c*Y, m_c*X^2, m_c*Y^2 over a window around each anchor (AveragePool);
  2. centroid (cx, cy) = first moments / mass; a uniform rectangle of width w has variance w^2/12,
     so w = sqrt(12 * var_x), h = sqrt(12 * var_y);
  3. score = (enough pixels) x (centroid near this anchor) x (object inside the window: the mass in
     the window equals the mass in a larger one), so that one anchor per object wins and NMS
     removes the rest.
Anchors are on a stride-8 grid; the box of an anchor is the box of its class with the higher
score.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ["person", "vehicle"]
# Colour detectors: weights on (R, G, B) in [0, 1] and a bias; positive where the class colour is.
COLOUR = {
    "person": ([1.0, -0.5, -0.5], -0.35),
    "vehicle": ([-0.5, -0.5, 1.0], -0.35),
}
POOL = 4  # first downsampling (pixels per cell)
WINDOW = 17  # moment window, in cells (68 px at the model input)
OUTER = 21  # the larger window for the containment test
STRIDE = 2  # anchor stride, in cells (8 px)
MIN_PIXELS = 40.0  # fewer class pixels than this in the window: no object
SIGMA = 6.0  # px: how far from the anchor the centroid may be


def build(size: int, layout: str) -> onnx.ModelProto:
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    cells = size // POOL
    # Masks: 1x1 convolution to two channels, then a steep clipped ramp.
    w = np.array([COLOUR[c][0] for c in CLASSES], dtype=np.float32).reshape(2, 3, 1, 1)
    b = np.array([COLOUR[c][1] for c in CLASSES], dtype=np.float32)
    m = node("Conv", ["images", const("colour_w", w), const("colour_b", b)], "colour")
    m = node("Mul", [m, const("ten", 10.0)], "colour_steep")
    m = node("Clip", [m, const("zero", 0.0), const("one", 1.0)], "mask")
    m = node("AveragePool", [m], "mask_cells", kernel_shape=[POOL, POOL], strides=[POOL, POOL])
    # Coordinate planes at cell centres, in input pixels.
    centres = (np.arange(cells, dtype=np.float32) + 0.5) * POOL
    X = np.broadcast_to(centres[None, :], (cells, cells)).reshape(1, 1, cells, cells)
    Y = np.broadcast_to(centres[:, None], (cells, cells)).reshape(1, 1, cells, cells)
    X, Y = const("X", X), const("Y", Y)
    mx = node("Mul", [m, X], "mx")
    my = node("Mul", [m, Y], "my")
    mxx = node("Mul", [mx, X], "mxx")
    myy = node("Mul", [my, Y], "myy")
    stack = node("Concat", [m, mx, my, mxx, myy], "moments_in", axis=1)  # [N, 10, c, c]

    def pool(inp, k, name):
        pad = k // 2
        return node("AveragePool", [inp], name, kernel_shape=[k, k], strides=[STRIDE, STRIDE],
                    pads=[pad, pad, pad, pad], count_include_pad=1)

    mom = pool(stack, WINDOW, "moments")  # averages over WINDOW^2 cells
    outer = pool(m, OUTER, "outer_mass")
    anchors = cells // STRIDE

    def channels(inp, start, name):
        return node("Slice", [inp, const_i(f"k_{name}_start", [start]), const_i(f"k_{name}_end", [start + 2]),
                              const_i(f"k_{name}_axis", [1])], name)

    def const_i(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name))
        return name

    eps = const("eps", 1e-6)
    mass = channels(mom, 0, "mass")  # [N, 2, a, a], per class
    mass_e = node("Add", [mass, eps], "mass_e")
    cx = node("Div", [channels(mom, 2, "sx"), mass_e], "cx")
    cy = node("Div", [channels(mom, 4, "sy"), mass_e], "cy")
    vx = node("Sub", [node("Div", [channels(mom, 6, "sxx"), mass_e], "ex2"), node("Mul", [cx, cx], "cx2")], "vx")
    vy = node("Sub", [node("Div", [channels(mom, 8, "syy"), mass_e], "ey2"), node("Mul", [cy, cy], "cy2")], "vy")
    twelve = const("twelve", 12.0)
    bw = node("Sqrt", [node("Relu", [node("Mul", [vx, twelve], "vx12")], "vx12p")], "bw")
    bh = node("Sqrt", [node("Relu", [node("Mul", [vy, twelve], "vy12")], "vy12p")], "bh")
    # Scores. Pixels in the window: mass (a mean over cells of per-cell fractions) x cells x POOL^2.
    pixels = node("Mul", [mass, const("to_pixels", WINDOW * WINDOW * POOL * POOL)], "pixels")
    enough = node("Sigmoid", [node("Mul", [node("Sub", [pixels, const("min_px", MIN_PIXELS)], "px_m"),
                                           const("px_k", 0.2)], "px_s")], "enough")
    acentres = (np.arange(anchors, dtype=np.float32)) * STRIDE * POOL + POOL / 2
    AX = const("AX", np.broadcast_to(acentres[None, :], (anchors, anchors)).reshape(1, 1, anchors, anchors))
    AY = const("AY", np.broadcast_to(acentres[:, None], (anchors, anchors)).reshape(1, 1, anchors, anchors))
    dx = node("Sub", [cx, AX], "dx")
    dy = node("Sub", [cy, AY], "dy")
    d2 = node("Add", [node("Mul", [dx, dx], "dx2"), node("Mul", [dy, dy], "dy2")], "d2")
    near = node("Exp", [node("Mul", [d2, const("near_k", -1.0 / (2 * SIGMA * SIGMA))], "d2k")], "near")
    inner_px = pixels
    outer_px = node("Mul", [outer, const("to_pixels_outer", OUTER * OUTER * POOL * POOL)], "outer_px")
    ratio = node("Div", [inner_px, node("Add", [outer_px, const("eps1", 1e-3)], "outer_e")], "ratio")
    ratio = node("Clip", [ratio, const("zero2", 0.0), const("one2", 1.0)], "ratio_c")
    inside = node("Pow", [ratio, const("inside_p", 8.0)], "inside")
    score = node("Mul", [node("Mul", [enough, near], "en"), inside], "score")  # [N, 2, a, a]
    # Box of the better class per anchor.
    best = node("ReduceMax", [score, const_i("axis1", [1])], "best", keepdims=1)  # [N, 1, a, a]
    is_best = node("Cast", [node("GreaterOrEqual", [score, best], "ge")], "is_best", to=TensorProto.FLOAT)
    # Ties: average the tied classes' boxes.
    count = node("ReduceSum", [is_best, const_i("axis1b", [1])], "count", keepdims=1)

    def pick(v, name):
        s = node("ReduceSum", [node("Mul", [v, is_best], f"{name}_m"), const_i(f"{name}_ax", [1])],
                 f"{name}_s", keepdims=1)
        return node("Div", [s, count], name)

    box = node("Concat", [pick(cx, "bcx"), pick(cy, "bcy"), pick(bw, "bbw"), pick(bh, "bbh")], "box", axis=1)
    per_anchor = node("Concat", [box, score], "per_anchor", axis=1)  # [N, 4 + 2, a, a]
    flat = node("Reshape", [per_anchor, const_i("flat_shape", [0, 4 + len(CLASSES), -1])], "flat")
    n_anchors = anchors * anchors
    if layout == "v8":
        out = node("Identity", [flat], "output0")
        out_shape = ["batch", 4 + len(CLASSES), n_anchors]
    else:
        # YOLOv5: [N, A, 5 + C] with objectness; class confidence = objectness x class probability.
        t = node("Transpose", [flat], "t", perm=[0, 2, 1])  # [N, A, 6]
        boxes = node("Slice", [t, const_i("b_s", [0]), const_i("b_e", [4]), const_i("b_a", [2])], "v5_box")
        cls = node("Slice", [t, const_i("c_s", [4]), const_i("c_e", [6]), const_i("c_a", [2])], "v5_cls")
        obj = node("ReduceMax", [cls, const_i("axis2", [2])], "v5_obj", keepdims=1)
        prob = node("Div", [cls, node("Add", [obj, eps], "obj_e")], "v5_prob")
        out = node("Concat", [boxes, obj, prob], "output0", axis=2)
        out_shape = ["batch", n_anchors, 5 + len(CLASSES)]
    graph = helper.make_graph(
        nodes,
        f"vigil_shapes_{layout}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="vigil scripts/make_shapes_model.py")
    model.ir_version = 8
    names = {i: c for i, c in enumerate(CLASSES)}
    helper.set_model_props(model, {"names": str(names), "stride": "8", "imgsz": f"[{size}, {size}]"})
    onnx.checker.check_model(model)
    return model


def check(path: str, size: int) -> None:
    """Draws known boxes and checks that the v8 model scores them highest where they are."""
    import onnxruntime as ort

    img = np.full((1, 3, size, size), 0.45, dtype=np.float32)
    truth = [("person", 40, 60, 12, 30), ("vehicle", 150, 100, 44, 22), ("person", 250, 200, 14, 34)]
    for cls, x, y, w, h in truth:
        colour = (0.8, 0.15, 0.15) if cls == "person" else (0.15, 0.25, 0.8)
        for c in range(3):
            img[0, c, y:y + h, x:x + w] = colour[c]
    out = ort.InferenceSession(path).run(None, {"images": img})[0][0]  # [6, A]
    for cls, x, y, w, h in truth:
        k = CLASSES.index(cls)
        a = int(np.argmax(out[4 + k] * (np.abs(out[0] - (x + w / 2)) < 12) * (np.abs(out[1] - (y + h / 2)) < 12)))
        cx, cy, bw, bh, s = out[0, a], out[1, a], out[2, a], out[3, a], out[4 + k, a]
        ok = abs(cx - (x + w / 2)) < 2 and abs(cy - (y + h / 2)) < 2 and abs(bw - w) < 3 and abs(bh - h) < 3 and s > 0.5
        print(f"{cls}: box ({cx:.1f}, {cy:.1f}, {bw:.1f}, {bh:.1f}) score {s:.2f} -> {'ok' if ok else 'WRONG'}")
        if not ok:
            sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for layout in ("v8", "v5"):
        path = os.path.join(a.out, f"shapes_{layout}.onnx")
        tmp = path + ".tmp"
        onnx.save(build(a.size, layout), tmp)
        os.replace(tmp, path)
        print(f"wrote {path}")
    if a.check:
        check(os.path.join(a.out, "shapes_v8.onnx"), a.size)


if __name__ == "__main__":
    main()
