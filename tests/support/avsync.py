"""The A/V offsets of a recording of bench/pages/avsync.html, measured as the benchmark does
(bench.py's av_offsets: flash onsets against beep onsets).

usage: avsync.py FILE FPS    prints {"flashes": N, "beeps": N, "offsets_ms": [...]} as JSON
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))

from bench import av_offsets  # noqa: E402  (the benchmark's own measurement)


def main():
    path, fps = sys.argv[1], float(sys.argv[2])
    print(json.dumps(av_offsets(path, fps)))


if __name__ == "__main__":
    main()
