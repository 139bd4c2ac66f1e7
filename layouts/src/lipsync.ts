// Lip sync: holds each participant's camera picture back by as long as its microphone's sound
// waits in this browser before it is played, and a screen share by its own sound's (a shared tab
// with audio).
//
// A browser lines up the sound and picture of one stream only, and LiveKit gives every track a
// stream of its own, so nothing else lines a participant's picture up with its sound (rewriting
// the offer into one stream per participant did not make Chromium do it either). The sound
// waits in its jitter buffer and in the browser's playout (86-218 ms on a 2-core machine
// recording one room, up to 1.4 s past its cores) while the picture waits 7-20 ms, so a room's
// sound came 53-147 ms after its picture (each recording's median); with the picture held back
// by the sound's wait, -46 to +24 ms (BENCHMARKS.md, "Lip sync"). Each second, the camera's
// receiver is asked to hold its frames (`jitterBufferTarget`) as long as the microphone's samples
// waited over the last second. A picture without a sound of its own (a screen share without
// audio) is shown as it comes.
import { Track } from 'livekit-client';
import type { RemoteAudioTrack, RemoteVideoTrack, Room } from 'livekit-client';
import { type SoundCounts, soundCounts } from './rtcstats';

const EVERY_MS = 1_000;
/** The most a receiver accepts as its target (the WebRTC spec's limit). */
const MAX_TARGET_MS = 4_000;

type TargetReceiver = RTCRtpReceiver & { jitterBufferTarget?: number | null };

/** Each picture's source and the source of the sound it is held to. */
const PAIRS: ReadonlyArray<readonly [Track.Source, Track.Source]> = [
  [Track.Source.Camera, Track.Source.Microphone],
  [Track.Source.ScreenShare, Track.Source.ScreenShareAudio],
];

export class LipSync {
  /** Each picture's (participant identity and source) last reading of its sound's waits. */
  private readonly last = new Map<string, SoundCounts>();

  constructor(private readonly room: Room) {
    window.setInterval(() => void this.adjust(), EVERY_MS);
  }

  private async adjust(): Promise<void> {
    const here = new Set<string>();
    for (const p of this.room.remoteParticipants.values()) {
      for (const [picture, sound] of PAIRS) {
        const key = `${p.identity} ${picture}`;
        const audio = p.getTrackPublication(sound)?.track as RemoteAudioTrack | undefined;
        const video = p.getTrackPublication(picture)?.track as RemoteVideoTrack | undefined;
        const receiver = video?.receiver as TargetReceiver | undefined;
        if (!audio || !receiver || !('jitterBufferTarget' in receiver)) continue;
        here.add(key);
        const now = await soundCounts(audio);
        if (!now) continue;
        const before = this.last.get(key);
        this.last.set(key, now);
        const wait = before ? meanWaitMs(before, now) : undefined;
        if (wait === undefined) continue;
        receiver.jitterBufferTarget = Math.min(MAX_TARGET_MS, Math.max(0, Math.round(wait)));
      }
    }
    for (const key of this.last.keys()) if (!here.has(key)) this.last.delete(key);
  }
}

/** How long the sound's samples waited, on average, between two readings (ms). */
function meanWaitMs(before: SoundCounts, now: SoundCounts): number | undefined {
  const emitted = now.emitted - before.emitted;
  const samples = now.playout_samples - before.playout_samples;
  if (emitted <= 0 || samples <= 0) return undefined;
  const buffered = (now.delay - before.delay) / emitted;
  const playout = (now.playout_delay - before.playout_delay) / samples;
  return (buffered + playout) * 1000;
}
