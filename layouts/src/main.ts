// pagecast's built-in room layouts: grid-light, grid-dark, speaker-light, speaker-dark.
// index.html#/<layout>?url=<ws url>&token=<JWT>&grace=<seconds, default 5>
//   [&participant=<identity>[&screen_share=1]] or [&audio_track=<sid>][&video_track=<sid>]:
//   that participant or those tracks only; [&audio_only=1]: no video subscribed (params.ts)
// The page only subscribes; it never publishes. See protocol.ts for the console lines.
import {
  ConnectionState,
  DisconnectReason,
  LogLevel,
  Participant,
  ParticipantKind,
  RemoteAudioTrack,
  RemoteParticipant,
  RemoteTrack,
  RemoteTrackPublication,
  RemoteVideoTrack,
  Room,
  RoomEvent,
  Track,
  setLogLevel,
} from 'livekit-client';
import { describeConnectError } from './errors';
import { FrameStats } from './framestats';
import { LipSync } from './lipsync';
import { DEFAULT_ASPECT, Rect, contain, gridCells, speakerCells } from './geometry';
import { PageParams, isLayout, parseParams } from './params';
import { addSecret, endRecording, isFinished, isStarted, pageError, startRecording } from './protocol';

/** How long room.connect may take in all before the page gives up. */
const CONNECT_TIMEOUT_MS = 30_000;

/**
 * After the room's first media plays, how long START_RECORDING waits for the other videos on the
 * stage to show their first frame (a participant whose video never arrives must not hold the
 * recording back for long).
 */
const START_SETTLE_MS = 2_000;

/** Every tile's received, decoded and shown frames, logged once a second (framestats.ts). */
const frameStats = new FrameStats();

interface Item {
  key: string;
  participant: RemoteParticipant;
  screen: boolean;
  track?: RemoteVideoTrack;
}

/** One tile on the stage: a video element, a placeholder and a name label. */
class Tile {
  readonly el: HTMLDivElement;
  private readonly video: HTMLVideoElement;
  private readonly placeholder: HTMLDivElement;
  private readonly initials: HTMLSpanElement;
  private readonly label: HTMLDivElement;
  private track?: RemoteVideoTrack;
  private aspect = 0;
  /** The current track has shown a frame. */
  private shownFrame = false;
  /** Stops counting the current track's frames. */
  private unwatch?: () => void;

  constructor(
    private readonly onFrame: () => void,
    private readonly onResize: () => void,
  ) {
    this.el = document.createElement('div');
    this.el.className = 'tile';
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.addEventListener('resize', () => this.updateAspect());
    this.video.addEventListener('loadedmetadata', () => this.updateAspect());
    this.placeholder = document.createElement('div');
    this.placeholder.className = 'placeholder';
    this.initials = document.createElement('span');
    this.placeholder.appendChild(this.initials);
    this.label = document.createElement('div');
    this.label.className = 'label';
    this.el.append(this.video, this.placeholder, this.label);
  }

  private updateAspect(): void {
    const { videoWidth, videoHeight } = this.video;
    const aspect = videoWidth > 0 && videoHeight > 0 ? videoWidth / videoHeight : 0;
    if (Math.abs(aspect - this.aspect) > 1e-3) {
      this.aspect = aspect;
      this.onResize();
    }
  }

  private watchFirstFrame(): void {
    const v: HTMLVideoElement = this.video;
    const track = this.track;
    const shown = () => {
      if (this.track !== track) return;
      this.shownFrame = true;
      this.onFrame();
    };
    if (typeof v.requestVideoFrameCallback === 'function') {
      v.requestVideoFrameCallback(shown);
    } else {
      const onPlaying = () => {
        v.removeEventListener('playing', onPlaying);
        if (v.videoWidth > 0) shown();
      };
      v.addEventListener('playing', onPlaying);
    }
  }

  setTrack(track: RemoteVideoTrack | undefined): void {
    if (track === this.track) return;
    if (this.track) this.track.detach(this.video);
    this.unwatch?.();
    this.unwatch = undefined;
    this.track = track;
    this.aspect = 0;
    this.shownFrame = false;
    if (track) {
      track.attach(this.video);
      this.watchFirstFrame();
      this.unwatch = frameStats.watch(this.video, track);
      this.updateAspect();
    } else {
      this.video.srcObject = null;
    }
    this.el.classList.toggle('has-video', track !== undefined);
  }

  /** A video this tile should show has not shown its first frame yet. */
  waitsForFrame(): boolean {
    return this.track !== undefined && !this.shownFrame;
  }

  setText(name: string, initials: string): void {
    if (this.label.textContent !== name) this.label.textContent = name;
    if (this.initials.textContent !== initials) this.initials.textContent = initials;
  }

  /** Places the tile in its cell, at the video's aspect ratio (16:9 when unknown). */
  place(cell: Rect): void {
    const r = contain(cell, this.track && this.aspect > 0 ? this.aspect : DEFAULT_ASPECT);
    const s = this.el.style;
    s.left = `${r.x}px`;
    s.top = `${r.y}px`;
    s.width = `${r.w}px`;
    s.height = `${r.h}px`;
    const font = Math.max(10, Math.min(22, Math.round(r.h * 0.045)));
    this.label.style.fontSize = `${font}px`;
    this.label.style.display = r.h < 40 ? 'none' : '';
    this.initials.style.fontSize = `${Math.max(12, Math.round(r.h * 0.28))}px`;
  }

  destroy(): void {
    this.setTrack(undefined);
    this.el.remove();
  }
}

function displayName(p: Participant): string {
  return p.name && p.name.trim() !== '' ? p.name.trim() : p.identity;
}

function initialsOf(name: string): string {
  const words = name.split(/[\s._-]+/).filter((w) => w.length > 0);
  const letters = words.slice(0, 2).map((w) => Array.from(w)[0] ?? '');
  return letters.join('').toUpperCase() || '?';
}

/** Participants that do not count and are not shown: hidden ones (other recorders). */
function isVisible(p: RemoteParticipant): boolean {
  return p.permissions?.hidden !== true && p.kind !== ParticipantKind.EGRESS;
}

class App {
  private readonly room: Room;
  private readonly stage: HTMLElement;
  private readonly audioBox: HTMLElement;
  private readonly tiles = new Map<string, Tile>();
  private readonly screenSince = new Map<string, number>();
  /** Each subscribed audio track's entry in the frame counters' lines (stops it). */
  private readonly soundWatches = new Map<RemoteTrack, () => void>();
  private speaker?: string;
  private connected = false;
  private anyoneJoined = false;
  private emptyTimer?: number;
  private renderQueued = false;
  private settleTimer?: number;
  /** With a focus: the publications this page asked to subscribe to, by track sid. */
  private readonly requested = new Set<string>();

  constructor(private readonly params: PageParams) {
    this.stage = document.getElementById('stage') ?? document.body;
    this.audioBox = document.getElementById('audio') ?? document.body;
    this.room = new Room({ adaptiveStream: false, dynacast: false });
    new LipSync(this.room);
    this.wire();
    window.addEventListener('resize', () => this.scheduleRender());
  }

  private wire(): void {
    const room = this.room;
    const changed = () => {
      this.subscribeFocus();
      this.scheduleRender();
      this.checkEmpty();
    };
    room
      .on(RoomEvent.ParticipantConnected, changed)
      .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => {
        if (this.speaker === p.identity) this.speaker = undefined;
        changed();
      })
      .on(RoomEvent.ParticipantPermissionsChanged, changed)
      .on(RoomEvent.ParticipantNameChanged, changed)
      .on(RoomEvent.TrackPublished, changed)
      .on(RoomEvent.TrackUnpublished, changed)
      .on(RoomEvent.TrackMuted, changed)
      .on(RoomEvent.TrackUnmuted, changed)
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub, p: RemoteParticipant) => {
        if (track.kind === Track.Kind.Audio) this.attachAudio(track, p);
        if (track.source === Track.Source.ScreenShare) this.screenSince.set(p.identity, performance.now());
        changed();
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack, _pub, p: RemoteParticipant) => {
        if (track.kind === Track.Kind.Audio) {
          track.detach().forEach((el) => el.remove());
          this.soundWatches.get(track)?.();
          this.soundWatches.delete(track);
        }
        if (track.source === Track.Source.ScreenShare) this.screenSince.delete(p.identity);
        changed();
      })
      .on(RoomEvent.ActiveSpeakersChanged, (speakers: Participant[]) => this.onSpeakers(speakers))
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        if (!room.canPlaybackAudio) room.startAudio().catch(() => undefined);
      })
      .on(RoomEvent.Reconnecting, () => this.checkEmpty())
      .on(RoomEvent.SignalReconnecting, () => this.checkEmpty())
      .on(RoomEvent.Reconnected, changed)
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => this.onDisconnected(reason));
  }

  async run(): Promise<void> {
    const { url, token, server } = this.params;
    let timer: number | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = window.setTimeout(() => reject(new Error('timeout')), CONNECT_TIMEOUT_MS);
    });
    try {
      // With a focus only its tracks are subscribed, and for a recording of the sound alone no
      // video (subscribeFocus): the others are not received, so not decoded either.
      const autoSubscribe = this.params.focus === undefined && !this.params.audioOnly;
      await Promise.race([this.room.connect(url, token, { autoSubscribe }), timeout]);
    } catch (e) {
      const reason = e instanceof Error && e.message === 'timeout' ? 'timed out' : describeConnectError(e);
      pageError(`could not connect to ${server}: ${reason}`);
      this.room.disconnect().catch(() => undefined);
      return;
    } finally {
      window.clearTimeout(timer);
    }
    this.connected = true;
    this.subscribeFocus();
    this.room.startAudio().catch(() => undefined);
    // Tracks of participants already in the room may have been subscribed during connect.
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.audioTrackPublications.values()) {
        if (pub.track) this.attachAudio(pub.track, p);
      }
    }
    this.scheduleRender();
    this.checkEmpty();
  }

  /** Whether a participant counts: visible (isVisible), and the focus (the participant, or the
   *  owner of one of the tracks) if there is one. */
  private counts(p: RemoteParticipant): boolean {
    const focus = this.params.focus;
    if (!isVisible(p)) return false;
    if (focus === undefined) return true;
    if (focus.kind === 'participant') return p.identity === focus.identity;
    return [focus.audio, focus.video].some((sid) => sid !== undefined && p.trackPublications.has(sid));
  }

  /** Whether a track is the focus's: one of its tracks; a participant's screen share and its
   *  sound, or the rest. */
  private inFocus(p: RemoteParticipant, sid: string | undefined, source: Track.Source): boolean {
    const focus = this.params.focus;
    if (focus === undefined) return true;
    if (focus.kind === 'tracks') return sid !== undefined && (sid === focus.audio || sid === focus.video);
    const screen = source === Track.Source.ScreenShare || source === Track.Source.ScreenShareAudio;
    return this.counts(p) && screen === focus.screen;
  }

  /** With a focus, or for the sound alone: subscribes to the publications wanted (the focus's;
   *  sounds only) not asked for yet. */
  private subscribeFocus(): void {
    const { focus, audioOnly } = this.params;
    if ((focus === undefined && !audioOnly) || !this.connected) return;
    for (const p of this.room.remoteParticipants.values()) {
      p.trackPublications.forEach((pub: RemoteTrackPublication) => {
        if (this.requested.has(pub.trackSid) || !this.inFocus(p, pub.trackSid, pub.source)) return;
        if (audioOnly && pub.kind === Track.Kind.Video) return;
        this.requested.add(pub.trackSid);
        pub.setSubscribed(true);
      });
    }
  }

  /** The participants that count, in the order they joined (then by identity). */
  private visible(): RemoteParticipant[] {
    const joined = (p: RemoteParticipant) => {
      // The server's millisecond join time (livekit-client keeps it in a protected field).
      const ms = (p as unknown as { participantInfo?: { joinedAtMs?: bigint } }).participantInfo?.joinedAtMs;
      if (typeof ms === 'bigint' && ms > BigInt(0)) return Number(ms);
      return p.joinedAt?.getTime() ?? Number.MAX_SAFE_INTEGER;
    };
    return Array.from(this.room.remoteParticipants.values())
      .filter((p) => this.counts(p))
      .sort((a, b) => joined(a) - joined(b) || (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
  }

  private onDisconnected(reason?: DisconnectReason): void {
    if (!this.connected || isFinished()) return;
    this.clearEmptyTimer();
    if (this.anyoneJoined || isStarted()) {
      endRecording();
    } else {
      const why = reason !== undefined && DisconnectReason[reason] ? DisconnectReason[reason] : 'connection lost';
      pageError(`disconnected from ${this.params.server} before any participant joined (${why})`);
    }
  }

  private onSpeakers(speakers: Participant[]): void {
    const remote = speakers.filter(
      (s): s is RemoteParticipant => s instanceof RemoteParticipant && this.counts(s),
    );
    if (remote.length === 0) return; // nobody speaks: keep the last speaker
    if (this.speaker && remote.some((s) => s.identity === this.speaker)) return; // no flapping
    this.speaker = remote[0].identity;
    this.scheduleRender();
  }

  private attachAudio(track: RemoteTrack, p: RemoteParticipant): void {
    if (track.attachedElements.length > 0 || !this.inFocus(p, track.sid, track.source)) return;
    const el = track.attach();
    const onPlaying = () => {
      el.removeEventListener('playing', onPlaying);
      if (this.counts(p)) this.mediaPlaying();
    };
    el.addEventListener('playing', onPlaying);
    this.audioBox.appendChild(el);
    el.play().catch(() => this.room.startAudio().catch(() => undefined));
    this.soundWatches.set(track, frameStats.watchSound(track as RemoteAudioTrack));
  }

  /** END_RECORDING once the room has had nobody visible for `grace` (after START_RECORDING). */
  private checkEmpty(): void {
    if (this.visible().length > 0) this.anyoneJoined = true;
    if (!this.connected || !isStarted() || isFinished()) return;
    const empty = this.visible().length === 0;
    if (!empty || this.room.state !== ConnectionState.Connected) {
      this.clearEmptyTimer(); // someone is there, or reconnecting: the room is not over
      return;
    }
    if (this.emptyTimer !== undefined) return;
    this.emptyTimer = window.setTimeout(() => {
      this.emptyTimer = undefined;
      if (this.visible().length === 0 && this.room.state === ConnectionState.Connected) endRecording();
      else this.checkEmpty();
    }, this.params.graceMs);
  }

  private clearEmptyTimer(): void {
    if (this.emptyTimer !== undefined) window.clearTimeout(this.emptyTimer);
    this.emptyTimer = undefined;
  }

  private onFirstFrame(): void {
    this.mediaPlaying();
    this.checkEmpty();
  }

  /**
   * Some of the room's media plays (a visible participant's audio, or a video's first frame):
   * START_RECORDING once every video on the stage shows a frame, so the recording opens on the
   * whole room rather than on black tiles, or START_SETTLE_MS after the first media at the latest.
   */
  private mediaPlaying(): void {
    if (isStarted() || isFinished()) return;
    if (this.settleTimer === undefined) {
      this.settleTimer = window.setTimeout(() => startRecording(), START_SETTLE_MS);
    }
    // Tiles are placed by render(): bring the stage up to date before asking it.
    this.render();
    if (this.videosPending()) return;
    window.clearTimeout(this.settleTimer);
    startRecording();
  }

  /** A participant on the stage publishes video that has not shown its first frame yet (none
   *  is waited for when the sound alone is recorded). */
  private videosPending(): boolean {
    if (this.params.audioOnly) return false;
    const { main, rest } = this.items();
    for (const item of main ? [main, ...rest] : rest) {
      const tile = this.tiles.get(item.key);
      if (tile?.waitsForFrame()) return true;
      if (!item.track && this.publishesVideo(item.participant, item.screen)) return true;
    }
    return false;
  }

  /** An unmuted video publication (not subscribed yet, or not yet on the stage). */
  private publishesVideo(p: RemoteParticipant, screen: boolean): boolean {
    for (const pub of p.videoTrackPublications.values()) {
      if ((pub.source === Track.Source.ScreenShare) === screen && !pub.isMuted) return true;
    }
    return false;
  }

  /** Switches to another layout in place (pagecast's UpdateLayout): the room stays connected,
   *  the tiles are placed anew at the next frame. */
  setLayout(name: PageParams['layout']): void {
    const root = document.documentElement;
    root.classList.remove(`theme-${this.params.theme}`, `layout-${this.params.kind}`);
    const [kind, theme] = name.split('-') as [PageParams['kind'], PageParams['theme']];
    Object.assign(this.params, { layout: name, kind, theme });
    root.classList.add(`theme-${theme}`, `layout-${kind}`);
    document.title = `pagecast ${name}`;
    this.scheduleRender();
  }

  private scheduleRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    window.setTimeout(() => {
      this.renderQueued = false;
      this.render();
    }, 0);
  }

  private videoOf(p: RemoteParticipant, screen: boolean): RemoteVideoTrack | undefined {
    for (const pub of p.videoTrackPublications.values()) {
      const isScreen = pub.source === Track.Source.ScreenShare;
      if (isScreen !== screen) continue;
      const track = pub.videoTrack;
      if (pub.isSubscribed && !pub.isMuted && track instanceof RemoteVideoTrack) return track;
    }
    return undefined;
  }

  /** The stage's item for the video track `sid`, once a participant publishes it. */
  private trackItem(people: RemoteParticipant[], sid: string | undefined): Item[] {
    if (sid === undefined) return [];
    for (const p of people) {
      const pub = p.videoTrackPublications.get(sid);
      if (pub === undefined) continue;
      const track = pub.isSubscribed && !pub.isMuted && pub.videoTrack instanceof RemoteVideoTrack ? pub.videoTrack : undefined;
      return [{ key: `${sid}:track`, participant: p, screen: pub.source === Track.Source.ScreenShare, track }];
    }
    return [];
  }

  private items(): { main?: Item; rest: Item[] } {
    const people = this.visible();
    const cameras: Item[] = people.map((p) => ({
      key: `${p.sid || p.identity}:camera`,
      participant: p,
      screen: false,
      track: this.videoOf(p, false),
    }));
    // One participant: their camera, or their screen share, fills the stage; or the one video
    // track asked for (none: the stage stays empty, only its sound is recorded).
    const focus = this.params.focus;
    if (focus?.kind === 'participant') {
      if (!focus.screen) return { rest: cameras };
      // Their screen share as soon as it is published, so the start waits for its first frame
      // (videosPending) rather than opening on an empty stage.
      const shared = people.filter((p) => this.publishesVideo(p, true));
      return {
        rest: shared.map((p) => ({ key: `${p.sid || p.identity}:screen`, participant: p, screen: true, track: this.videoOf(p, true) })),
      };
    }
    if (focus?.kind === 'tracks') return { rest: this.trackItem(people, focus.video) };
    const screens: Item[] = [];
    for (const p of people) {
      const track = this.videoOf(p, true);
      if (track) screens.push({ key: `${p.sid || p.identity}:screen`, participant: p, screen: true, track });
    }
    if (this.params.kind === 'grid') {
      const rest: Item[] = [];
      for (const c of cameras) {
        rest.push(c);
        const s = screens.find((x) => x.participant === c.participant);
        if (s) rest.push(s);
      }
      return { rest };
    }
    // speaker: the newest screen share, else the active speaker (else the first participant)
    if (screens.length > 0) {
      const since = (i: Item) => this.screenSince.get(i.participant.identity) ?? 0;
      const main = screens.reduce((a, b) => (since(b) > since(a) ? b : a));
      return { main, rest: cameras };
    }
    if (cameras.length === 0) return { rest: [] };
    let main = cameras.find((c) => c.participant.identity === this.speaker);
    if (!main) {
      main = cameras[0];
      this.speaker = main.participant.identity;
    }
    return { main, rest: cameras.filter((c) => c !== main) };
  }

  private render(): void {
    if (isFinished() && !isStarted()) return;
    const width = window.innerWidth;
    const height = window.innerHeight;
    const { main, rest } = this.items();
    const placed: Array<[Item, Rect, boolean]> = [];
    if (this.params.kind === 'grid' || this.params.focus) {
      const cells = gridCells(rest.length, width, height);
      rest.forEach((item, i) => placed.push([item, cells[i], false]));
    } else if (main) {
      const { main: mainCell, strip } = speakerCells(rest.length, width, height);
      placed.push([main, mainCell, true]);
      rest.forEach((item, i) => placed.push([item, strip[i], false]));
    }
    const keep = new Set<string>();
    for (const [item, cell, isMain] of placed) {
      keep.add(item.key);
      let tile = this.tiles.get(item.key);
      if (!tile) {
        tile = new Tile(
          () => this.onFirstFrame(),
          () => this.scheduleRender(),
        );
        this.tiles.set(item.key, tile);
        this.stage.appendChild(tile.el);
      }
      const name = displayName(item.participant);
      tile.setText(item.screen ? `${name} (screen)` : name, initialsOf(name));
      tile.setTrack(item.track);
      tile.el.classList.toggle('main', isMain);
      tile.place(cell);
    }
    for (const [key, tile] of this.tiles) {
      if (!keep.has(key)) {
        tile.destroy();
        this.tiles.delete(key);
      }
    }
  }
}

function start(): void {
  setLogLevel(LogLevel.warn);
  const parsed = parseParams(window.location);
  const theme = parsed.ok ? parsed.params.theme : /light/.test(window.location.hash) ? 'light' : 'dark';
  document.documentElement.classList.add(`theme-${theme}`);
  if (!parsed.ok) {
    pageError(parsed.reason);
    return;
  }
  addSecret(parsed.params.token);
  const query = new URL(parsed.params.url).search.slice(1);
  if (query) addSecret(query);
  document.documentElement.classList.add(`layout-${parsed.params.kind}`);
  // One participant is shown as their picture alone, without a name label.
  if (parsed.params.focus) document.documentElement.classList.add('focus');
  document.title = `pagecast ${parsed.params.layout}`;
  const app = new App(parsed.params);
  // Called by pagecast (WebDriver) to switch the layout while recording; answers what it did.
  (window as unknown as { pagecastSetLayout: (name: string) => string }).pagecastSetLayout = (name) => {
    if (!isLayout(name)) return `unknown layout ${JSON.stringify(name.slice(0, 40))}`;
    app.setLayout(name);
    return 'ok';
  };
  app.run().catch((e: unknown) => {
    pageError(`could not connect to ${parsed.params.server}: ${describeConnectError(e)}`);
  });
}

start();
