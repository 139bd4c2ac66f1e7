#!/usr/bin/env python3
"""A real LiveKit participant for pagecast's room-recording tests.

    .venv/bin/python tests/support/participant.py --url ws://10.213.7.1:7880 \
        --api-key devkey --api-secret <secret> --room r1 --identity alice --name Alice \
        --color FF0000 --tone 440

It joins the room, publishes a solid-colour camera video (640x360 at 15 fps by default) and a
sine tone (48 kHz mono), and once it is connected and every track is published prints
``TRACKS {"video": sid, "audio": sid, ...}`` (its published tracks' sids, by the names the stdin
commands use), then exactly ``JOINED``, each on its own stdout line. It then stays until
SIGTERM or SIGINT, until its standard input closes (only watched when stdin is a pipe or socket,
so a test that dies takes it along), or until --leave-after seconds; then it disconnects
cleanly (the room sees it leave at once) and exits 0. Errors go to stderr with a non-zero exit;
the secret and the token are never printed.

For the benchmark's room density (bench/bench.py): ``--moving`` makes every camera frame differ
from the one before (a bar that steps across the colour each frame), so a recording that shows a
frame twice has lost one; ``--avsync`` (with ``--moving``) turns the camera white for two frames
and the audio into a 1 kHz beep (silence otherwise) at the same instants, once a second, both
scheduled from the same instant, as bench/pages/avsync.html does for a page.

Lines on stdin, each answered on stdout with ``OK <line>`` once done (for re-flow tests):
    mute video | unmute video | mute audio | unmute audio | leave
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime
import json
import logging
import math
import os
import re
import signal
import stat
import sys
from urllib.parse import urlsplit

from livekit import api, rtc

SAMPLE_RATE = 48000
AUDIO_FRAME_MS = 10


_SECRETS: list[str] = []
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?")


def redact(text: str) -> str:
    """No secret, token or JWT-looking string survives (the SDK quotes the token in errors)."""
    for s in _SECRETS:
        text = text.replace(s, "****")
    text = _JWT.sub("****", text)
    return re.sub(r"(access_token=)[^&\s'\"]*", r"\1****", text)


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.msg += " (" + redact(repr(record.exc_info[1])) + ")"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging() -> None:
    """The SDK's own logs (its native library's included) go to stderr, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redact())
    handler.setFormatter(logging.Formatter("participant: %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def err(msg: str) -> None:
    print(f"participant: {redact(msg)}", file=sys.stderr, flush=True)


def server_of(url: str) -> str:
    """scheme://host:port only: never a path, a query or credentials."""
    try:
        u = urlsplit(url)
        host = u.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")
    except ValueError:
        return "<invalid url>"


def color(value: str) -> tuple[int, int, int]:
    v = value.strip().lstrip("#")
    if len(v) != 6 or any(c not in "0123456789abcdefABCDEF" for c in v):
        raise argparse.ArgumentTypeError(f"expected RRGGBB, got {value!r}")
    return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)


def size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {value!r}") from None
    if w < 16 or h < 16 or w > 3840 or h > 2160 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"unsupported size {value!r}")
    return w, h


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A LiveKit test participant (solid colour + tone).")
    p.add_argument("--url", required=True, help="ws://host:port of the LiveKit server")
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--name", default=None, help="display name (default: the identity)")
    p.add_argument("--color", type=color, default=color("FF0000"), help="camera colour RRGGBB")
    p.add_argument("--size", type=size, default=(640, 360), help="camera size, default 640x360")
    p.add_argument("--fps", type=float, default=15.0, help="camera frame rate, default 15")
    p.add_argument("--no-video", action="store_true", help="publish no camera track")
    p.add_argument("--screen", type=color, default=None,
                   help="also publish a 1280x720 screen share of this colour RRGGBB")
    p.add_argument("--screen-tone", type=float, default=0.0,
                   help="with --screen: its own sound, a sine tone of this many Hz (a shared tab's "
                        "audio; default 0: none)")
    p.add_argument("--tone", type=float, default=0.0,
                   help="sine tone in Hz published as audio (default 0: no audio track)")
    p.add_argument("--moving", action="store_true",
                   help="every camera frame differs from the one before (a moving bar), sent at "
                        "the full --fps: the encoder may lower the picture's quality, not its "
                        "frame rate")
    p.add_argument("--avsync", action="store_true",
                   help="with --moving: a white frame and a beep together once a second")
    p.add_argument("--tone-level", type=float, default=0.3,
                   help="the tone's amplitude, 0..1 (default 0.3)")
    p.add_argument("--leave-after", type=float, default=None,
                   help="leave after this many seconds (default: stay)")
    p.add_argument("--connect-timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    if not 0 < a.fps <= 60:
        p.error("--fps must be in (0, 60]")
    if a.avsync and not a.moving:
        p.error("--avsync needs --moving")
    if not 0 < a.tone_level <= 1:
        p.error("--tone-level must be in (0, 1]")
    if a.tone < 0 or a.tone >= SAMPLE_RATE / 2:
        p.error("--tone must be 0 or a frequency below 24000 Hz")
    return a


def solid_frame(w: int, h: int, rgb: tuple[int, int, int]) -> rtc.VideoFrame:
    data = bytes((rgb[0], rgb[1], rgb[2], 255)) * (w * h)
    return rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, data)


def moving_frames(w: int, h: int, rgb: tuple[int, int, int], steps: int
                  ) -> list[rtc.VideoFrame]:
    """`steps` frames of the colour with a dark bar one step further right in each: consecutive
    frames always differ (the bar is w / steps wide, so it moves its own width each frame)."""
    bar_w = max(2, w // steps)
    frames = []
    for i in range(steps):
        x0 = i * bar_w
        row = bytearray(bytes((rgb[0], rgb[1], rgb[2], 255)) * w)
        row[4 * x0:4 * min(w, x0 + bar_w)] = bytes((16, 16, 16, 255)) * (min(w, x0 + bar_w) - x0)
        frames.append(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, bytes(row) * h))
    return frames


def flash_frames(fps: float) -> set[int]:
    """Frame numbers (in a one-second cycle) shown white with --avsync: the first two."""
    return {0, 1} if fps >= 2 else {0}


async def pump_video(source: rtc.VideoSource, frames: list[rtc.VideoFrame], fps: float,
                     stop: asyncio.Event, start: float | None = None,
                     white: rtc.VideoFrame | None = None) -> None:
    loop = asyncio.get_running_loop()
    period = 1.0 / fps
    t0 = start if start is not None else loop.time()
    n = 0
    per_s = max(1, round(fps))
    flash = flash_frames(fps)
    while not stop.is_set():
        frame = frames[n % len(frames)]
        if white is not None and n % per_s in flash:
            frame = white
        source.capture_frame(frame, timestamp_us=int(n * period * 1_000_000))
        n += 1
        delay = t0 + n * period - loop.time()
        if delay < -1.0:  # fell far behind (suspended): start a new schedule
            t0, n, delay = loop.time(), 0, 0.0
        await asyncio.sleep(max(0.0, delay))


async def pump_tone(source: rtc.AudioSource, hz: float, stop: asyncio.Event, level: float = 0.3,
                    beeps_from: float | None = None) -> None:
    """The tone, sent 10 ms at a time (continuous for a whole number of Hz), paced in real time
    by the source's queue. `beeps_from` (the video's start, on the loop's clock): a beep instead,
    the first 100 ms of each second after it, each beep's first sample sent into the room when
    the white flash of the same second is (`pump_video`): the beep's place in the tone is taken
    from the clock at which the frame leaves the source's queue, so the published pair starts
    aligned (within a 10 ms frame) and a recording's A/V offset can be read against zero."""
    spf = SAMPLE_RATE * AUDIO_FRAME_MS // 1000
    table = array.array("h", (int(level * 32767 * math.sin(2 * math.pi * hz * i / SAMPLE_RATE))
                              for i in range(SAMPLE_RATE))).tobytes()
    silence = bytes(spf * 2)
    step = spf * 2
    beep = SAMPLE_RATE // 10
    loop = asyncio.get_running_loop()
    off = 0
    while not stop.is_set():
        data = table[off:off + step]
        off = (off + step) % len(table)
        if beeps_from is not None:
            # When this frame will be sent: now, after what the queue holds.
            at = loop.time() + source.queued_duration - beeps_from
            into = round((at % 1.0) * SAMPLE_RATE / spf) * spf  # a frame boundary
            data = table[into * 2:into * 2 + step] if at >= 0 and into < beep else silence
        frame = rtc.AudioFrame(data, SAMPLE_RATE, 1, spf)
        await source.capture_frame(frame)


async def watch_stdin(room: rtc.Room, tracks: dict[str, rtc.LocalTrack], stop: asyncio.Event
                      ) -> None:
    mode = os.fstat(0).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return  # /dev/null, a file or a terminal: only signals stop us
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            stop.set()  # stdin closed: whoever started us is gone
            return
        cmd = " ".join(line.decode("utf-8", "replace").split())
        if not cmd:
            continue
        verb, _, what = cmd.partition(" ")
        if cmd == "leave":
            print(f"OK {cmd}", flush=True)
            stop.set()
            return
        if verb in ("mute", "unmute") and what in tracks:
            track = tracks[what]
            track.mute() if verb == "mute" else track.unmute()
            print(f"OK {cmd}", flush=True)
        else:
            err(f"unknown command {cmd[:40]!r} (mute|unmute video|audio, leave)")


async def run(a: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = server_of(a.url)
    token: str = (
        api.AccessToken(a.api_key, a.api_secret)
        .with_identity(a.identity)
        .with_name(a.name or a.identity)
        .with_ttl(datetime.timedelta(hours=6))
        .with_grants(api.VideoGrants(room_join=True, room=a.room, can_publish=True,
                                     can_subscribe=False, can_publish_data=False))
        .to_jwt()
    )
    _SECRETS.append(token)

    room = rtc.Room()
    left = asyncio.Event()
    room.on("disconnected", lambda *_: left.set())
    try:
        await asyncio.wait_for(
            room.connect(a.url, token, rtc.RoomOptions(auto_subscribe=False)), a.connect_timeout)
    except asyncio.TimeoutError:
        err(f"could not connect to {server}: timed out after {a.connect_timeout:g} s")
        return 1
    except Exception as e:  # rtc.ConnectError and friends
        err(f"could not connect to {server}: {redact(str(e))[:300]}")
        return 1

    tasks: list[asyncio.Task] = []
    # --avsync: the video's flashes and the audio's beeps both counted from this instant.
    start = loop.time()
    tracks: dict[str, rtc.LocalTrack] = {}
    sids: dict[str, str] = {}  # each published track's sid, by the same names
    sources: list = []
    try:
        if not a.no_video:
            w, h = a.size
            vsrc = rtc.VideoSource(w, h)
            sources.append(vsrc)
            vtrack = rtc.LocalVideoTrack.create_video_track("camera", vsrc)
            if a.moving:
                frames = moving_frames(w, h, a.color, 16)
                white = solid_frame(w, h, (255, 255, 255)) if a.avsync else None
                tasks.append(asyncio.create_task(pump_video(vsrc, frames, a.fps, stop, start,
                                                            white)))
            else:
                tasks.append(asyncio.create_task(pump_video(vsrc, [solid_frame(w, h, a.color)],
                                                            a.fps, stop)))
            opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA,
                                           simulcast=False)
            if a.moving:
                # Every frame counts (the benchmark counts them): none dropped to save bits or CPU.
                opts.video_encoding.max_framerate = a.fps
                opts.video_encoding.max_bitrate = 1_500_000
                opts.degradation_preference = rtc.DegradationPreference.MAINTAIN_FRAMERATE
            sids["video"] = (await room.local_participant.publish_track(vtrack, opts)).sid
            tracks["video"] = vtrack
        if a.screen is not None:
            ssrc = rtc.VideoSource(1280, 720, is_screencast=True)
            sources.append(ssrc)
            strack = rtc.LocalVideoTrack.create_video_track("screen", ssrc)
            tasks.append(asyncio.create_task(pump_video(ssrc, [solid_frame(1280, 720, a.screen)],
                                                        5.0, stop)))
            sids["screen"] = (await room.local_participant.publish_track(
                strack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE,
                                                simulcast=False))).sid
            tracks["screen"] = strack
            if a.screen_tone > 0:
                sasrc = rtc.AudioSource(SAMPLE_RATE, 1)
                sources.append(sasrc)
                satrack = rtc.LocalAudioTrack.create_audio_track("screen audio", sasrc)
                tasks.append(asyncio.create_task(pump_tone(sasrc, a.screen_tone, stop)))
                sids["screen audio"] = (await room.local_participant.publish_track(
                    satrack,
                    rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO))).sid
                tracks["screen audio"] = satrack
        if a.tone > 0:
            # With --avsync a short queue: the beeps are placed by when their frame is sent,
            # and a 1 s queue filled ahead would let the clock's reading drift from that.
            asrc = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=50 if a.avsync else 1000)
            sources.append(asrc)
            atrack = rtc.LocalAudioTrack.create_audio_track("microphone", asrc)
            tasks.append(asyncio.create_task(pump_tone(asrc, a.tone, stop, a.tone_level,
                                                       start if a.avsync else None)))
            sids["audio"] = (await room.local_participant.publish_track(
                atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))).sid
            tracks["audio"] = atrack
    except Exception as e:
        err(f"could not publish in room {a.room!r} on {server}: {str(e)[:300]}")
        stop.set()
        await room.disconnect()
        return 1

    print(f"TRACKS {json.dumps(sids)}", flush=True)
    print("JOINED", flush=True)

    tasks.append(asyncio.create_task(watch_stdin(room, tracks, stop)))
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(left.wait())]
    if a.leave_after is not None:
        waiters.append(asyncio.create_task(asyncio.sleep(a.leave_after)))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    kicked = left.is_set() and not stop.is_set()
    stop.set()
    for t in waiters + tasks:
        t.cancel()
    await asyncio.gather(*waiters, *tasks, return_exceptions=True)
    if kicked:
        err(f"disconnected from {server} by the server")
        return 1
    try:
        await asyncio.wait_for(room.disconnect(), 5.0)
    except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - leave anyway
        err(f"disconnect did not finish cleanly: {type(e).__name__}")
    for s in sources:
        try:
            await s.aclose()
        except Exception:  # noqa: BLE001
            pass
    return 0


def main() -> int:
    a = parse_args(sys.argv[1:])
    _SECRETS.append(a.api_secret)
    setup_logging()
    try:
        return asyncio.run(run(a))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    code = main()
    # The room is left by now. Skip the interpreter's teardown: the SDK's native runtime, torn
    # down from there, aborts with "panic in a function that cannot unwind" on stderr.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
