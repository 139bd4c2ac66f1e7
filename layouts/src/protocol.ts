// The console protocol the recorder reads. Only these exact texts count:
//   console.log("START_RECORDING")          once, when remote media first plays
//   console.log("END_RECORDING")            once, when the room is over
//   console.error("PAGECAST_ERROR <reason>")  once, instead of both when the page cannot join
// After END_RECORDING or PAGECAST_ERROR nothing more is logged.

let started = false;
let finished = false;
const secrets: string[] = [];

/** Strings that must never appear in a logged reason (the token, the full ws URL). */
export function addSecret(s: string): void {
  if (s.length >= 4) secrets.push(s);
}

/** One short line without secrets: no JWT, no access_token=..., no query string of a URL. */
export function sanitize(text: string): string {
  let t = text;
  for (const s of secrets) t = t.split(s).join('****');
  t = t
    .replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?/g, '****')
    .replace(/(access_token|token)=[^&\s'"]*/gi, '$1=****')
    .replace(/(wss?|https?):\/\/(?:[^\s/?#@'"]*@)?([^\s/?#'"]+)[^\s'"]*/gi, '$1://$2')
    .replace(/\s+/g, ' ')
    .trim();
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
}

export function isStarted(): boolean {
  return started;
}

export function isFinished(): boolean {
  return finished;
}

export function startRecording(): void {
  if (started || finished) return;
  started = true;
  console.log('START_RECORDING');
}

export function endRecording(): void {
  if (finished) return;
  finished = true;
  console.log('END_RECORDING');
}

export function pageError(reason: string): void {
  if (finished) return;
  finished = true;
  console.error(`PAGECAST_ERROR ${sanitize(reason)}`);
}
