import { accountsApp } from '../../examples/accounts/app.js';
import { entityStateApp } from '../../examples/entity-state/app.js';
import { teamsApp } from '../../examples/teams/app.js';
import type { ConcordApp } from '../http/app.js';

/**
 * The applications `concord node` serves. Every node of a cluster must serve the same
 * list (they define the entity kinds). To add one, import it and append it here.
 */
export const apps: readonly ConcordApp[] = [entityStateApp, accountsApp, teamsApp];
