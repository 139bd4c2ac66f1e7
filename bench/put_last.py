#!/usr/bin/env python3
"""A recording beside a page that keeps the CPU busy, under `pagecast serve`.

One worker (a machine of 2 cores as `PAGECAST_TEST_MACHINE` gives it, `--max-recordings 2`, a
redis-server of its own on loopback) takes two jobs: `hog`, tests/pages/hog.html keeping
`--workers` web workers busy (640x360@30, 40 s), and `calm`, the canvas page at 1280x720@30
(35 s), started after the hog's first frame. Prints the share of calm's frames kept from 15 s to
30 s of its file (a frame that differs from the one before: the canvas page changes every frame),
whether the worker put the hog last (its `recording used more than its share of the CPU` line),
and both files' durations. Run it with two builds to compare them:

    bench/put_last.py BINARY [--workers 16]
"""
import argparse, json, os, shutil, signal, subprocess, tempfile

from bench import _connects, frame_stats, free_port, probe, resp, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="put-last-")
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: _connects(port), 10):
            raise SystemExit("redis-server did not start")

        def push(job, url, w, h, secs):
            config = {"input": {"url": url, "width": w, "height": h},
                      "output": {"file": f"{d}/{job}.mp4"}, "max_duration": f"{secs}s"}
            resp(port, "LPUSH", "{pl}:jobs", json.dumps({"id": job, "config": config}))

        def state(job):
            # A bulk string ("$4\r\ndone\r\n"), or none ("$-1\r\n").
            reply = resp(port, "HGET", "{pl}:job:" + job, "state").split(b"\r\n")
            return reply[1].decode() if not reply[0].startswith(b"$-") else ""

        push("hog", f"file://{REPO}/tests/pages/hog.html?what=cpu&workers={args.workers}", 640, 360, 40)
        push("calm", f"file://{REPO}/bench/pages/canvas.html", 1280, 720, 35)
        env = dict(os.environ, PAGECAST_REDIS_URL=f"redis://127.0.0.1:{port}", PAGECAST_JOB_KEY=KEY,
                   PAGECAST_TEST_MACHINE="cores=2,memory=8GiB")
        with open(f"{d}/serve.log", "w") as log:
            serve = subprocess.Popen([args.binary, "--log-format", "json", "serve", "--queue", "pl",
                                      "--worker-id", "w", "--allow-file-urls", f"--output-root={d}",
                                      "--max-recordings", "2"], env=env, stderr=log)
            wait_for(lambda: all(state(j) in ("done", "failed") for j in ("hog", "calm")), 150,
                     every=1)
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)
        frames = frame_stats(f"{d}/calm.mp4", keys=("YDIF",))
        window = [s.get("YDIF", 0) for at, s in frames if 15 <= at < 30]
        kept = sum(1 for ydif in window if ydif >= 0.01)
        put_last = sum(1 for line in open(f"{d}/serve.log") if "share of the CPU" in line)
        print(f"calm kept {kept / (15 * 30):.3f} of its frames from 15 to 30 s; "
              f"hog put last: {'yes' if put_last else 'no'}; states: hog {state('hog')}, calm {state('calm')}")
        for job in ("hog", "calm"):
            p = probe(f"{d}/{job}.mp4") or {}
            video = p.get("video", {})
            print(f"  {job}: {p.get('duration')} s, video {video.get('codec')} "
                  f"({video.get('packets')} frames), audio {p.get('audio', {}).get('codec')}")
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
