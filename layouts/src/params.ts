// The page's address: index.html#/<layout>?url=<ws url>&token=<JWT>&grace=<seconds>
// [&participant=<identity>[&screen_share=1]]: one participant rather than the whole room;
// [&audio_track=<sid>][&video_track=<sid>]: those tracks only;
// [&audio_only=1]: the recording keeps the sound alone, so no video is subscribed.
// The same parameters are also read from the real query string
// (index.html?layout=..&url=..&token=..), for compatibility; the hash wins.

export const LAYOUTS = ['grid-light', 'grid-dark', 'speaker-light', 'speaker-dark'] as const;
export type LayoutName = (typeof LAYOUTS)[number];

export const DEFAULT_LAYOUT: LayoutName = 'grid-dark';
export const DEFAULT_GRACE_SECONDS = 5;

export interface PageParams {
  layout: LayoutName;
  kind: 'grid' | 'speaker';
  theme: 'light' | 'dark';
  url: string;
  /** scheme://host:port of `url`: the only part of it that may be shown. */
  server: string;
  token: string;
  graceMs: number;
  /** Part of the room only: one participant (LiveKit's participant egress), their camera and
   *  microphone or their screen share and its sound; or a video track and an audio track (its
   *  track composite). The rest of the room is neither shown, heard nor subscribed. */
  focus?: Focus;
  /** The recording keeps the sound alone: no video is subscribed, so none is received or
   *  decoded, and the start waits for no picture. */
  audioOnly: boolean;
}

export type Focus =
  | { kind: 'participant'; identity: string; screen: boolean }
  | { kind: 'tracks'; audio?: string; video?: string };

export type ParseResult = { ok: true; params: PageParams } | { ok: false; reason: string };

export function isLayout(name: string): name is LayoutName {
  return (LAYOUTS as readonly string[]).includes(name);
}

/** scheme://host[:port] of a URL, never its path, query or credentials. */
export function serverOf(url: string): string | undefined {
  try {
    const u = new URL(url);
    if (!/^(wss?|https?):$/.test(u.protocol) || u.host === '') return undefined;
    return `${u.protocol}//${u.host}`;
  } catch {
    return undefined;
  }
}

/** Splits "#/grid-dark?url=..&token=.." into the layout name and its parameters. */
function parseHash(hash: string): { layout: string; query: URLSearchParams } {
  let h = hash.startsWith('#') ? hash.slice(1) : hash;
  const q = h.indexOf('?');
  const path = q >= 0 ? h.slice(0, q) : h;
  const query = new URLSearchParams(q >= 0 ? h.slice(q + 1) : '');
  h = path.replace(/^\/+/, '').replace(/\/+$/, '');
  let layout = '';
  try {
    layout = decodeURIComponent(h);
  } catch {
    layout = h;
  }
  return { layout, query };
}

export function parseParams(loc: { hash: string; search: string }): ParseResult {
  const fromHash = parseHash(loc.hash);
  const fromSearch = new URLSearchParams(loc.search);
  const get = (name: string): string | null => {
    const v = fromHash.query.get(name);
    if (v !== null && v !== '') return v;
    const w = fromSearch.get(name);
    return w !== null && w !== '' ? w : null;
  };

  const layoutName = fromHash.layout || get('layout') || DEFAULT_LAYOUT;
  if (!isLayout(layoutName)) {
    // Show at most a short, printable prefix of what was asked for.
    const shown = layoutName.replace(/[^A-Za-z0-9_.-]/g, '?').slice(0, 40);
    return { ok: false, reason: `unknown layout "${shown}" (expected one of ${LAYOUTS.join(', ')})` };
  }

  const url = get('url');
  if (url === null) return { ok: false, reason: 'missing url parameter' };
  const server = serverOf(url);
  if (server === undefined) return { ok: false, reason: 'invalid url parameter (expected ws:// or wss://)' };

  const token = get('token');
  if (token === null) return { ok: false, reason: 'missing token parameter' };

  let graceMs = DEFAULT_GRACE_SECONDS * 1000;
  const grace = get('grace');
  if (grace !== null) {
    const seconds = Number(grace);
    if (!/^\d+(\.\d+)?$/.test(grace.trim()) || !Number.isFinite(seconds) || seconds > 86400) {
      return { ok: false, reason: 'invalid grace parameter (expected seconds, e.g. 5)' };
    }
    graceMs = Math.round(seconds * 1000);
  }

  let focus: Focus | undefined;
  const identity = get('participant');
  const screen = get('screen_share');
  const audio = get('audio_track') ?? undefined;
  const video = get('video_track') ?? undefined;
  if (screen !== null && !/^(1|true|0|false)$/.test(screen)) {
    return { ok: false, reason: 'invalid screen_share parameter (expected 1 or 0)' };
  }
  if (identity !== null && (audio !== undefined || video !== undefined)) {
    return { ok: false, reason: 'give a participant or tracks (audio_track, video_track), not both' };
  }
  if (identity !== null) focus = { kind: 'participant', identity, screen: screen === '1' || screen === 'true' };
  else if (screen !== null) return { ok: false, reason: 'screen_share needs a participant parameter' };
  else if (audio !== undefined || video !== undefined) focus = { kind: 'tracks', audio, video };
  const audioOnly = get('audio_only');
  if (audioOnly !== null && !/^(1|true|0|false)$/.test(audioOnly)) {
    return { ok: false, reason: 'invalid audio_only parameter (expected 1 or 0)' };
  }

  const [kind, theme] = layoutName.split('-') as ['grid' | 'speaker', 'light' | 'dark'];
  return {
    ok: true,
    params: {
      layout: layoutName,
      kind,
      theme,
      url,
      server,
      token,
      graceMs,
      focus,
      audioOnly: audioOnly === '1' || audioOnly === 'true',
    },
  };
}
