import type { RecordedEvent } from '../../src/index.js';
import { type TeamEvent, USER_STREAM_PREFIX } from './user.js';

/**
 * The teams read model: who is on which team, folded from the users' TeamJoined / TeamLeft
 * events. It is fed by a projection tailing the event log, so it trails the users' streams by
 * the projection's lag; the streams (and the user entities) are the truth.
 */
export class TeamView {
  private readonly users = new Map<string, { version: number; teamId: string | null }>();
  private readonly teams = new Map<string, Set<string>>();

  apply(event: RecordedEvent): void {
    if (!event.stream.startsWith(USER_STREAM_PREFIX)) return;
    const userId = event.stream.slice(USER_STREAM_PREFIX.length);
    const known = this.users.get(userId);
    // The log delivers each stream in version order, exactly once; this only guards against misuse.
    if (known && known.version >= event.version) return;
    const { type, data } = event as unknown as TeamEvent;
    if (known?.teamId) this.removeMember(known.teamId, userId);
    const teamId = type === 'TeamJoined' ? data.teamId : null;
    if (teamId !== null) {
      let members = this.teams.get(teamId);
      if (!members) {
        members = new Set();
        this.teams.set(teamId, members);
      }
      members.add(userId);
    }
    this.users.set(userId, { version: event.version, teamId });
  }

  /** The members of `teamId`, sorted (empty for a team nobody is on). */
  members(teamId: string): string[] {
    return [...(this.teams.get(teamId) ?? [])].sort();
  }

  private removeMember(teamId: string, userId: string): void {
    const members = this.teams.get(teamId);
    members?.delete(userId);
    if (members?.size === 0) this.teams.delete(teamId);
  }
}
