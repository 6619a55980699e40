#!/usr/bin/python3
"""A real RTSP server for the tests: GStreamer's rtsp-server serving rendered city video as H.264.

Run with Debian's system Python (only it imports `gi`), from scripts/test-fixtures' packages:
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}, python3-gi.

    /usr/bin/python3 scripts/rtsp_server.py --port 0 --fps 10 --size 640x360 \
        --mount /cam0=frames0.rgb [--mount /cam1=frames1.rgb ...] [--user U --password-env VAR]

With `--onvif PATH=TRUTH.jsonl`, that mount also carries an ONVIF analytics metadata stream
(`vnd.onvif.metadata`), as cameras that detect on the device send: for each video frame, one
`tt:MetadataStream` document with the frame's objects from TRUTH.jsonl (one JSON list of
{"class", "bbox": [x, y, w, h]} per frame, pixels, as `vigil render` writes it), boxes in ONVIF's
normalized coordinates. GStreamer has no ONVIF payloader in Debian's packages, so this script
registers a small one (python3-gst-1.0 for the element overrides).

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
gi.require_version("GstRtp", "1.0")
from gi.repository import GLib, GObject, Gst, GstRtp, GstRtspServer  # noqa: E402

Gst.init(None)  # before the payloader class below builds its pad templates

ONVIF_TYPES = {"person": "Human", "car": "Vehicle"}


class OnvifPay(GstRtp.RTPBasePayload):
    """One XML document per access unit: split over RTP packets of at most 1,400 bytes with one
    timestamp, the marker set on the last (ONVIF Streaming Specification 5.1.2.1)."""

    __gstmetadata__ = ("ONVIF metadata payloader", "Codec/Payloader/Network/RTP",
                       "Payloads ONVIF analytics metadata (test fixture)", "vigil")
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS,
                            Gst.Caps.from_string("application/x-onvif-metadata")),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS,
                            Gst.Caps.from_string("application/x-rtp")),
    )
    seq = 0

    def do_set_caps(self, caps):
        self.set_options("application", True, "VND.ONVIF.METADATA", 90000)
        return self.set_outcaps_structure(None)

    def do_handle_buffer(self, buf):
        ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data)
        buf.unmap(info)
        # The whole packet is written here and pushed on the source pad: the base class' header
        # writer needs a buffer that Python does not also hold a reference to. SSRC, sequence
        # and timestamp offsets are the ones the server announced (RTP-Info, Transport).
        stats = self.get_property("stats")
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else 0
        ts = (stats.get_value("timestamp-offset") + pts * 90000 // Gst.SECOND) & 0xFFFFFFFF
        pad = self.get_static_pad("src")
        chunks = [data[i:i + 1400] for i in range(0, len(data), 1400)] or [b""]
        ret = Gst.FlowReturn.OK
        for k, chunk in enumerate(chunks):
            self.seq += 1
            seq = (stats.get_value("seqnum-offset") + self.seq) & 0xFFFF
            marker = 0x80 if k == len(chunks) - 1 else 0
            header = bytes([0x80, marker | self.get_property("pt")]) + seq.to_bytes(2, "big") \
                + ts.to_bytes(4, "big") + stats.get_value("ssrc").to_bytes(4, "big")
            packet = header + chunk
            out = Gst.Buffer.new_allocate(None, len(packet), None)
            out.fill(0, packet)
            out.pts = buf.pts
            if self.seq == 1:
                segment = Gst.Segment()
                segment.init(Gst.Format.TIME)
                pad.push_event(Gst.Event.new_segment(segment))
            ret = pad.push(out)
            if ret != Gst.FlowReturn.OK:
                break
        return ret


def onvif_document(objects, width, height):
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    parts = []
    for i, o in enumerate(objects):
        x, y, w, h = o["bbox"]
        left, right = 2 * x / width - 1, 2 * (x + w) / width - 1
        top, bottom = 1 - 2 * y / height, 1 - 2 * (y + h) / height
        parts.append(
            f'<tt:Object ObjectId="{i + 1}"><tt:Appearance><tt:Shape>'
            f'<tt:BoundingBox left="{left:.6f}" top="{top:.6f}" right="{right:.6f}" bottom="{bottom:.6f}"/>'
            f'</tt:Shape><tt:Class><tt:Type Likelihood="0.9">{ONVIF_TYPES.get(o["class"], "Other")}</tt:Type>'
            f"</tt:Class></tt:Appearance></tt:Object>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema">'
        f'<tt:VideoAnalytics><tt:Frame UtcTime="{now}">{"".join(parts)}</tt:Frame></tt:VideoAnalytics>'
        "</tt:MetadataStream>"
    ).encode()


class Feed:
    """Frames of one mount, read once and shared by its clients."""

    def __init__(self, path, width, height):
        size = width * height * 3
        data = open(path, "rb").read()
        if len(data) < size or len(data) % size:
            sys.exit(f"{path}: {len(data)} bytes is not a whole number of {width}x{height} RGB frames")
        self.frames = [data[i:i + size] for i in range(0, len(data), size)]


def make_factory(feed, width, height, fps, truth=None, codec="h264"):
    factory = GstRtspServer.RTSPMediaFactory()
    meta = (
        " appsrc name=meta is-live=true format=time do-timestamp=false max-buffers=2 caps=application/x-onvif-metadata"
        " ! vigilonvifpay name=pay1 pt=107"
        if truth is not None
        else ""
    )
    encode = (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1500 "
        f"! rtph264pay name=pay0 pt=96 config-interval=1"
        if codec == "h264"
        else "jpegenc ! rtpjpegpay name=pay0 pt=26"
    )
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time do-timestamp=false "
        f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! video/x-raw,format=I420 ! {encode}{meta} )"
    )
    factory.set_shared(False)
    duration = Gst.SECOND // fps

    def configure(_factory, media):
        src = media.get_element().get_by_name("src")
        meta = media.get_element().get_by_name("meta")
        state = {"i": 0}
        if meta is not None:
            # The metadata stream is paced by its own requests, so that it flows when a client
            # sets up only this stream (a camera whose analytics run on the device).
            docs = {"i": 0}

            def need_doc(appsrc, _length):
                j = docs["i"]
                doc = Gst.Buffer.new_wrapped(onvif_document(truth[j % len(truth)], width, height))
                doc.pts = j * duration
                doc.duration = duration
                docs["i"] = j + 1
                appsrc.emit("push-buffer", doc)

            meta.connect("need-data", need_doc)

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
    p.add_argument("--onvif", action="append", default=[], help="PATH=TRUTH.jsonl")
    p.add_argument("--codec", choices=["h264", "jpeg"], default="h264", help="jpeg: a camera vigil cannot decode")
    p.add_argument("--user")
    p.add_argument("--password-env", default="VIGIL_TEST_RTSP_PASSWORD")
    a = p.parse_args()
    width, height = (int(v) for v in a.size.split("x"))
    GObject.type_register(OnvifPay)
    Gst.Element.register(None, "vigilonvifpay", Gst.Rank.NONE, OnvifPay)
    truths = {}
    for m in a.onvif:
        path, file = m.split("=", 1)
        import json

        truths[path] = [json.loads(line) for line in open(file)]
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    for m in a.mount:
        path, file = m.split("=", 1)
        factory = make_factory(Feed(file, width, height), width, height, a.fps, truths.get(path), a.codec)
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
