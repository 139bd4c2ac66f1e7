// Lip sync: holds each participant's camera picture back by as long as its sound waits in this
// browser before it is played.
//
// A browser lines up the sound and picture of one stream only, and LiveKit gives every track a
// stream of its own, so nothing else lines a participant's picture up with its sound (rewriting
// the offer into one stream per participant did not make Chromium do it either). The sound
// waits in its jitter buffer and in the browser's playout (86-218 ms on a 2-core machine
// recording one room, up to 1.4 s past its cores) while the picture waits 7-20 ms, so a room's
// sound came 53-147 ms after its picture (each recording's median); with the picture held back
// by the sound's wait, -46 to +24 ms (BENCHMARKS.md, "Lip sync"). Each second, the camera's
// receiver is asked to hold its frames (`jitterBufferTarget`) as long as the microphone's samples
// waited over the last second; a screen share has no sound of its own and is left alone.
import { Track } from 'livekit-client';
import type { RemoteAudioTrack, RemoteVideoTrack, Room } from 'livekit-client';

const EVERY_MS = 1_000;
/** The most a receiver accepts as its target (the WebRTC spec's limit). */
const MAX_TARGET_MS = 4_000;

type Stat = { type?: string; kind?: string; [k: string]: unknown };

/** A sound's cumulative waits: in its jitter buffer, then in the browser's playout. */
interface Waits {
  buffered: number;
  emitted: number;
  playout: number;
  samples: number;
}

type TargetReceiver = RTCRtpReceiver & { jitterBufferTarget?: number | null };

export class LipSync {
  /** Each participant's (by identity) last reading of its microphone's waits. */
  private readonly last = new Map<string, Waits>();

  constructor(private readonly room: Room) {
    window.setInterval(() => void this.adjust(), EVERY_MS);
  }

  private async adjust(): Promise<void> {
    const here = new Set<string>();
    for (const p of this.room.remoteParticipants.values()) {
      here.add(p.identity);
      const audio = p.getTrackPublication(Track.Source.Microphone)?.track as
        | RemoteAudioTrack
        | undefined;
      const video = p.getTrackPublication(Track.Source.Camera)?.track as
        | RemoteVideoTrack
        | undefined;
      const receiver = video?.receiver as TargetReceiver | undefined;
      if (!audio || !receiver || !('jitterBufferTarget' in receiver)) {
        this.last.delete(p.identity);
        continue;
      }
      const now = await waits(audio);
      if (!now) continue;
      const before = this.last.get(p.identity);
      this.last.set(p.identity, now);
      const wait = before ? meanWaitMs(before, now) : undefined;
      if (wait === undefined) continue;
      receiver.jitterBufferTarget = Math.min(MAX_TARGET_MS, Math.max(0, Math.round(wait)));
    }
    for (const id of this.last.keys()) if (!here.has(id)) this.last.delete(id);
  }
}

/** How long the sound's samples waited, on average, between two readings (ms). */
function meanWaitMs(before: Waits, now: Waits): number | undefined {
  const emitted = now.emitted - before.emitted;
  const samples = now.samples - before.samples;
  if (emitted <= 0 || samples <= 0) return undefined;
  const buffered = (now.buffered - before.buffered) / emitted;
  const playout = (now.playout - before.playout) / samples;
  return (buffered + playout) * 1000;
}

/** The microphone receiver's waits now (none while it has no receiver). */
async function waits(track: RemoteAudioTrack): Promise<Waits | undefined> {
  const out: Waits = { buffered: 0, emitted: 0, playout: 0, samples: 0 };
  try {
    const report = await track.getRTCStatsReport();
    if (!report) return undefined;
    report.forEach((s: Stat) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.buffered = Number(s.jitterBufferDelay ?? 0);
        out.emitted = Number(s.jitterBufferEmittedCount ?? 0);
      }
      if (s.type === 'media-playout') {
        out.playout = Number(s.totalPlayoutDelay ?? 0);
        out.samples = Number(s.totalSamplesCount ?? 0);
      }
    });
  } catch {
    return undefined;
  }
  return out;
}
