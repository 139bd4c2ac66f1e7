//! HlsLiveActor: the live (sliding-window) HLS playlist, kept beside the event playlist.
//!
//! Owns: a timer. Every [`POLL`] it reads the encoder's event playlist (`index.m3u8`) and, when it
//! changed, writes the live playlist: its last `window` segments, with the media and
//! discontinuity sequence numbers a player needs to follow the window as it slides. The file is
//! written beside and renamed over the old one, so a player never reads half a playlist.
//! Why not a second `hls` leg in the encoder's tee: it would write every segment a second time;
//! and the live playlist only ever names segments the event playlist already names (closed ones).
//! Accepts: [`Shutdown`] (one last pass: the encoder stopped first and closed the event playlist
//! with `#EXT-X-ENDLIST`, which the live playlist then carries too), [`Kill`].
//! Sends: [`ChildExited`](crate::supervision::ChildExited) through its link when it stops.
//! Stops: on `Shutdown` or `Kill`. A playlist it cannot write is logged and tried again at the
//! next change: the recording and the event playlist do not depend on it.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;

use crate::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown};

/// How often the event playlist is read: a fraction of the shortest segment (1 s).
pub const POLL: Duration = Duration::from_millis(250);

/// What the live playlist is made from and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSpec {
    /// The encoder's event playlist.
    pub event_playlist: PathBuf,
    /// The live playlist, in the same directory (segment URIs are relative to it).
    pub live_playlist: PathBuf,
    /// Segments in the window.
    pub window: usize,
}

/// One segment of a playlist: its tags (`#EXTINF`, maybe `#EXT-X-DISCONTINUITY`) and its URI.
#[derive(Debug, Clone, PartialEq)]
struct Segment<'a> {
    lines: Vec<&'a str>,
    discontinuity: bool,
}

/// The live playlist for the event playlist `event`: its header, its last `window` segments, and
/// `#EXT-X-ENDLIST` if it has one. The media sequence counts the segments left out (the event
/// playlist's own starts at 0 or at its `#EXT-X-MEDIA-SEQUENCE`), the discontinuity sequence the
/// discontinuities left out with them (RFC 8216 4.3.3.3), so a player's position stays valid.
pub fn live_playlist(event: &str, window: usize) -> String {
    let mut header = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    let mut pending: Vec<&str> = Vec::new();
    let mut ended = false;
    let mut first_sequence = 0u64;
    for line in event.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            first_sequence = n.trim().parse().unwrap_or(0);
        } else if line.starts_with("#EXT-X-PLAYLIST-TYPE")
            || line.starts_with("#EXT-X-DISCONTINUITY-SEQUENCE")
        {
            // A sliding window is neither an event nor a VOD playlist; its sequence is ours.
        } else if line.starts_with("#EXTINF")
            || line.starts_with("#EXT-X-DISCONTINUITY")
            || line.starts_with("#EXT-X-PROGRAM-DATE-TIME")
            || line.starts_with("#EXT-X-BYTERANGE")
        {
            pending.push(line);
        } else if line.starts_with('#') {
            if segments.is_empty() && pending.is_empty() {
                header.push(line);
            }
        } else {
            let discontinuity = pending.contains(&"#EXT-X-DISCONTINUITY");
            pending.push(line);
            segments.push(Segment {
                lines: std::mem::take(&mut pending),
                discontinuity,
            });
        }
    }
    let dropped = segments.len().saturating_sub(window);
    let discontinuities = segments[..dropped]
        .iter()
        .filter(|s| s.discontinuity)
        .count();
    let mut out = String::new();
    if !header.contains(&"#EXTM3U") {
        out.push_str("#EXTM3U\n");
    }
    for line in &header {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "#EXT-X-MEDIA-SEQUENCE:{}\n",
        first_sequence + dropped as u64
    ));
    if discontinuities > 0 {
        out.push_str(&format!(
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}\n"
        ));
    }
    for segment in &segments[dropped..] {
        for line in &segment.lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

pub struct HlsLiveActor {
    link: ChildLink,
    spec: LiveSpec,
    /// The event playlist last turned into a live one.
    last: Option<String>,
}

impl HlsLiveActor {
    pub fn start(spec: LiveSpec, link: ChildLink) -> Addr<HlsLiveActor> {
        HlsLiveActor {
            link,
            spec,
            last: None,
        }
        .start()
    }

    /// Rewrites the live playlist if the event playlist changed.
    fn refresh(&mut self) {
        let Ok(event) = std::fs::read_to_string(&self.spec.event_playlist) else {
            return; // not written yet
        };
        if self.last.as_deref() == Some(event.as_str()) {
            return;
        }
        let live = live_playlist(&event, self.spec.window);
        match write_atomically(&self.spec.live_playlist, &live) {
            Ok(()) => self.last = Some(event),
            Err(e) => tracing::warn!(
                playlist = %self.spec.live_playlist.display(),
                error = %e,
                "cannot write the live HLS playlist"
            ),
        }
    }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".live-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Actor for HlsLiveActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh();
        ctx.run_interval(POLL, |act, _| act.refresh());
    }
}

impl Handler<Shutdown> for HlsLiveActor {
    type Result = Result<(), Failure>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.refresh();
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
        Ok(())
    }
}

impl Handler<Kill> for HlsLiveActor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXTINF:2.000000,\nsegment-00000.ts\n#EXTINF:2.000000,\nsegment-00001.ts\n\
        #EXT-X-DISCONTINUITY\n#EXTINF:2.000000,\nsegment-00002.ts\n\
        #EXTINF:2.000000,\nsegment-00003.ts\n#EXTINF:1.500000,\nsegment-00004.ts\n";

    #[test]
    fn the_window_slides_over_the_last_segments() {
        assert_eq!(
            live_playlist(EVENT, 2),
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n\
             #EXTINF:2.000000,\nsegment-00003.ts\n#EXTINF:1.500000,\nsegment-00004.ts\n"
        );
        // The discontinuity stays while its segment is in the window.
        let three = live_playlist(EVENT, 3);
        assert!(three.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{three}");
        assert!(!three.contains("DISCONTINUITY-SEQUENCE"), "{three}");
        assert!(
            three.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000000,\nsegment-00002.ts\n"),
            "{three}"
        );
        // Fewer segments than the window: all of them; closed: closed too.
        let all = live_playlist(&format!("{EVENT}#EXT-X-ENDLIST\n"), 10);
        assert!(all.contains("#EXT-X-MEDIA-SEQUENCE:0\n") && all.contains("segment-00000.ts"));
        assert!(all.ends_with("segment-00004.ts\n#EXT-X-ENDLIST\n"), "{all}");
        assert!(!all.contains("PLAYLIST-TYPE"), "{all}");
        // Nothing yet.
        assert_eq!(
            live_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n", 3),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        );
    }
}
