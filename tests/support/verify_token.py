"""Checks a LiveKit access token with LiveKit's own server SDK (livekit-api).

Reads the token from stdin and the key pair from LK_API_KEY / LK_API_SECRET; prints the claims
as the SDK understood them, as JSON, and exits 0, or prints why it refused the token and exits 1.
"""

import dataclasses
import json
import os
import sys

from livekit import api


def main() -> int:
    token = sys.stdin.read().strip()
    verifier = api.TokenVerifier(os.environ["LK_API_KEY"], os.environ["LK_API_SECRET"])
    try:
        claims = verifier.verify(token)
    except Exception as e:  # the SDK raises jwt errors of several kinds
        print(f"refused: {type(e).__name__}: {e}")
        return 1
    video = dataclasses.asdict(claims.video) if claims.video else None
    print(json.dumps({"identity": claims.identity, "name": claims.name, "video": video}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
