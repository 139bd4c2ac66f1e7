// The browser's WebRTC statistics the layout page reads, named in one place: the frame counters
// (framestats.ts) log them, lip sync (lipsync.ts) acts on a sound's waits.
import type { RemoteTrack } from 'livekit-client';

export type Stat = { type?: string; kind?: string; [k: string]: unknown };

/** A counter of a stats entry; 0 where the browser has none. */
export function num(v: unknown): number {
  return Number(v ?? 0);
}

/** The track's inbound-rtp entry and the page's media-playout entry; undefined when no report
 * could be read (a track that just ended has no receiver). */
export async function readStats(
  track: RemoteTrack,
): Promise<{ inbound?: Stat; playout?: Stat } | undefined> {
  const out: { inbound?: Stat; playout?: Stat } = {};
  try {
    const report = await track.getRTCStatsReport();
    if (!report) return undefined;
    report.forEach((s: Stat) => {
      if (s.type === 'inbound-rtp' && s.kind === track.kind) out.inbound = s;
      if (s.type === 'media-playout') out.playout = s;
    });
  } catch {
    return undefined;
  }
  return out;
}

/** A sound's cumulative waits: the seconds its samples waited in the jitter buffer (summed) and
 * how many left it; the seconds of the browser's playout after it and over how many samples. */
export interface SoundCounts {
  delay: number;
  emitted: number;
  playout_delay: number;
  playout_samples: number;
}

/** An audio track's waits now (zeros for what the browser does not report); undefined when no
 * report could be read. */
export async function soundCounts(track: RemoteTrack): Promise<SoundCounts | undefined> {
  const s = await readStats(track);
  if (!s) return undefined;
  return {
    delay: num(s.inbound?.jitterBufferDelay),
    emitted: num(s.inbound?.jitterBufferEmittedCount),
    playout_delay: num(s.playout?.totalPlayoutDelay),
    playout_samples: num(s.playout?.totalSamplesCount),
  };
}
