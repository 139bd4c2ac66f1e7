// A short reason for a failed connection, from livekit-client's ConnectionError.
import { ConnectionError, ConnectionErrorReason } from 'livekit-client';

/** What the server said about a rejected token, as fixed words: its text quotes the token. */
function tokenDetail(message: string): string {
  if (/expired/i.test(message)) return ': expired';
  if (/not valid yet/i.test(message)) return ': not valid yet';
  if (/signature/i.test(message)) return ': bad signature (wrong API secret?)';
  if (/permission/i.test(message)) return ': no permission to join the room';
  if (/key/i.test(message)) return ': unknown API key';
  return '';
}

export function describeConnectError(e: unknown): string {
  if (e instanceof ConnectionError) {
    const status = typeof e.status === 'number' ? e.status : undefined;
    switch (e.reason) {
      case ConnectionErrorReason.NotAllowed:
        if (status === 401) return `invalid token (401 unauthorized)${tokenDetail(e.message)}`;
        if (status === 403) return 'not allowed to join (403 forbidden)';
        if (status === 404) return 'room does not exist (404 not found)';
        return `not allowed to join (${status ?? 'no status'})`;
      case ConnectionErrorReason.ServerUnreachable:
        return status ? `server unreachable (HTTP ${status})` : 'server unreachable';
      case ConnectionErrorReason.Timeout:
        return 'timed out';
      case ConnectionErrorReason.WebSocket:
        return status ? `websocket error (HTTP ${status})` : 'websocket error';
      case ConnectionErrorReason.LeaveRequest:
        return 'the server refused the join';
      case ConnectionErrorReason.Cancelled:
        return 'connection cancelled';
      case ConnectionErrorReason.ServiceNotFound:
        return 'the server does not support this client';
      case ConnectionErrorReason.InternalError:
        if (/pc connection|PC connection|transport/i.test(e.message)) return 'media connection (WebRTC) failed';
        return status ? `internal error (HTTP ${status})` : `internal error: ${e.message}`;
    }
  }
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
