#!/usr/bin/env python3
"""Decodes a video file into the raw frames scripts/rtsp_server.py serves (RGB24, frame after
frame, no header), with OpenCV (the PyPI wheel, which carries its own FFmpeg: MS-MPEG4 and H.264).

    python scripts/video_frames.py VIDEO OUT.rgb [--frames N] [--start K]

Prints `WIDTHxHEIGHT FPS FRAMES` of what it wrote, for the server's --size and --fps.
"""
import argparse
import sys

import cv2


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=0, help="at most this many (0: all)")
    p.add_argument("--start", type=int, default=0, help="skip this many first")
    a = p.parse_args()
    cap = cv2.VideoCapture(a.video)
    if not cap.isOpened():
        sys.exit(f"{a.video}: OpenCV cannot open it; fix: give a video file OpenCV's FFmpeg decodes")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    n, size = 0, None
    with open(a.out, "wb") as out:
        index = 0
        while a.frames == 0 or n < a.frames:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if index <= a.start:
                continue
            size = (frame.shape[1], frame.shape[0])
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).tobytes())
            n += 1
    if n == 0:
        sys.exit(f"{a.video}: no frame decoded")
    print(f"{size[0]}x{size[1]} {fps:g} {n}")


if __name__ == "__main__":
    main()
