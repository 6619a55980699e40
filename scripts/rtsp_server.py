#!/usr/bin/python3
"""A real RTSP server for the tests: GStreamer's rtsp-server serving rendered city video as H.264.

Run with Debian's system Python (only it imports `gi`), from scripts/test-fixtures' packages:
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}, python3-gi.

    /usr/bin/python3 scripts/rtsp_server.py --port 0 --fps 10 --size 640x360 \
        --mount /cam0=frames0.rgb [--mount /cam1=frames1.rgb ...] [--user U --password-env VAR]

Each `--mount PATH=FILE` serves FILE (raw RGB24 frames as `vigil render` writes them), looped,
encoded by x264 at the given rate, payloaded by rtph264pay. The media factory is not shared, so
every client starts on a key frame. `--port 0` binds a free port; the server prints
`PORT <n>` on stdout once it listens. With `--user`, every mount needs those credentials
(GstRtspServer authentication applies to the whole server).
"""
import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class Feed:
    """Frames of one mount, read once and shared by its clients."""

    def __init__(self, path, width, height):
        size = width * height * 3
        data = open(path, "rb").read()
        if len(data) < size or len(data) % size:
            sys.exit(f"{path}: {len(data)} bytes is not a whole number of {width}x{height} RGB frames")
        self.frames = [data[i:i + size] for i in range(0, len(data), size)]


def make_factory(feed, width, height, fps):
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time do-timestamp=false "
        f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1500 "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)
    duration = Gst.SECOND // fps

    def configure(_factory, media):
        src = media.get_element().get_by_name("src")
        state = {"i": 0}

        def need_data(appsrc, _length):
            i = state["i"]
            buf = Gst.Buffer.new_wrapped(feed.frames[i % len(feed.frames)])
            buf.pts = i * duration
            buf.duration = duration
            state["i"] = i + 1
            appsrc.emit("push-buffer", buf)

        src.connect("need-data", need_data)

    factory.connect("media-configure", configure)
    return factory


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--size", default="640x360")
    p.add_argument("--mount", action="append", required=True, help="PATH=FILE")
    p.add_argument("--user")
    p.add_argument("--password-env", default="VIGIL_TEST_RTSP_PASSWORD")
    a = p.parse_args()
    width, height = (int(v) for v in a.size.split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    for m in a.mount:
        path, file = m.split("=", 1)
        factory = make_factory(Feed(file, width, height), width, height, a.fps)
        if a.user:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role("user", "media.factory.access", True)
            permissions.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(permissions)
        mounts.add_factory(path, factory)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        password = os.environ.get(a.password_env)
        if not password:
            sys.exit(f"--user needs the password in ${a.password_env}")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, password), token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {a.port}")
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
