// What each tile's video received, decoded and showed, logged once a second at debug level so a
// choppy recording can be told apart: a participant (or the network) that sent few frames, this
// browser that did not decode or show them, or the capture that missed frames the page showed.
// Beside it, how long each video and each sound waited in the browser before it was shown or
// played, so a recording's sound can be held against its picture.
//
//   console.debug('PAGECAST_FRAMES {"t":<ms>,"shown":<n>,"tiles":{"<key>":{...}},"sound":{...}}')
//
// All counts are cumulative since the page loaded (a tile's since its track came). Per tile:
//   received, decoded, dropped   the video receiver's inbound-rtp counters (framesReceived,
//                                framesDecoded, framesDropped)
//   delay, emitted               its jitter buffer: the seconds its frames waited there, summed
//                                (jitterBufferDelay), and how many left it (jitterBufferEmittedCount):
//                                their ratio is the mean wait
//   presented                    frames the video element presented to the compositor
//                                (requestVideoFrameCallback's presentedFrames)
// "shown": the page's composited frames in which at least one tile showed a new video frame
// (distinct expectedDisplayTimes over all tiles; a callback the page missed, when presentedFrames
// jumps by more than one, counts its frames as shown apart). "t": performance.now() in ms.
// "sound": per audio track ("audio<n>", numbered as they came) its jitter buffer as a tile's (in
// samples), and the browser's playout after it (media-playout: totalPlayoutDelay seconds over
// totalSamplesCount samples).
// Only counters are logged: no name, no identity, no URL (a tile's key is its place in the stage).

import type { RemoteAudioTrack, RemoteVideoTrack } from 'livekit-client';
import { type SoundCounts, num, readStats, soundCounts } from './rtcstats';

export const FRAMES_PREFIX = 'PAGECAST_FRAMES ';
const EVERY_MS = 1_000;

interface Watched {
  video: HTMLVideoElement;
  track: RemoteVideoTrack;
  presented: number;
  /** presentedFrames at the first callback for this track (the count starts there). */
  base?: number;
  last?: number;
}

interface TileCounts {
  received: number;
  decoded: number;
  dropped: number;
  delay: number;
  emitted: number;
  presented: number;
}

/** Counts every tile's frames; one per page. */
export class FrameStats {
  private readonly watched = new Map<number, Watched>();
  private next = 0;
  private shown = 0;
  /** The display times counted lately (a frame showing in two tiles is one composited frame). */
  private readonly recent: number[] = [];
  private timer?: number;
  private readonly sounds = new Map<number, RemoteAudioTrack>();
  private nextSound = 0;

  /** Starts counting `video` showing `track`; the returned function stops it. */
  watch(video: HTMLVideoElement, track: RemoteVideoTrack): () => void {
    if (typeof video.requestVideoFrameCallback !== 'function') return () => undefined;
    const id = this.next++;
    const w: Watched = { video, track, presented: 0 };
    this.watched.set(id, w);
    let handle = 0;
    const onFrame = (_now: number, meta: VideoFrameCallbackMetadata) => {
      if (this.watched.get(id) !== w) return;
      if (w.base === undefined) w.base = meta.presentedFrames - 1;
      const missed = w.last === undefined ? 0 : Math.max(0, meta.presentedFrames - w.last - 1);
      w.last = meta.presentedFrames;
      w.presented = meta.presentedFrames - w.base;
      this.shown += missed;
      this.countDisplay(meta.expectedDisplayTime);
      handle = video.requestVideoFrameCallback(onFrame);
    };
    handle = video.requestVideoFrameCallback(onFrame);
    this.timer ??= window.setInterval(() => void this.report(), EVERY_MS);
    return () => {
      video.cancelVideoFrameCallback(handle);
      this.watched.delete(id);
    };
  }

  /** Reports `track`'s waits with the tiles' counts (alone, on a page recording the sound
   *  alone); the returned function stops it. */
  watchSound(track: RemoteAudioTrack): () => void {
    const id = this.nextSound++;
    this.sounds.set(id, track);
    this.timer ??= window.setInterval(() => void this.report(), EVERY_MS);
    return () => void this.sounds.delete(id);
  }

  private countDisplay(at: number): void {
    const t = Math.round(at * 10) / 10;
    if (this.recent.includes(t)) return;
    this.shown += 1;
    this.recent.push(t);
    if (this.recent.length > 16) this.recent.shift();
  }

  private async report(): Promise<void> {
    const tiles: Record<string, TileCounts> = {};
    const at = performance.now();
    for (const [id, w] of this.watched) {
      // No report (a track that just ended): its counts are zero for this line.
      const { inbound } = (await readStats(w.track)) ?? {};
      tiles[`tile${id}`] = {
        received: num(inbound?.framesReceived),
        decoded: num(inbound?.framesDecoded),
        dropped: num(inbound?.framesDropped),
        delay: num(inbound?.jitterBufferDelay),
        emitted: num(inbound?.jitterBufferEmittedCount),
        presented: w.presented,
      };
    }
    if (Object.keys(tiles).length === 0 && this.sounds.size === 0) return;
    const sound: Record<string, SoundCounts> = {};
    for (const [id, track] of this.sounds) {
      sound[`audio${id}`] = (await soundCounts(track)) ?? NO_SOUND;
    }
    const line = { t: Math.round(at), shown: this.shown, tiles, sound };
    console.debug(`${FRAMES_PREFIX}${JSON.stringify(line)}`);
  }
}

const NO_SOUND: SoundCounts = { delay: 0, emitted: 0, playout_delay: 0, playout_samples: 0 };
