import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AnyEntityDefinition } from '../entity/define.js';
import type { ConcordApp } from '../http/app.js';

/**
 * `concord node --app MODULE`: load a user's application into the node, so a cluster (a
 * LocalCluster in a test, or production nodes) serves the user's own entities and routes.
 *
 * A module may export, as its default or named exports, any mix of:
 * - ConcordApps (an object with `name`, `entities` and a `routes` function), or arrays of them;
 * - entity definitions made by `defineEntity` / `defineEventSourcedEntity` (an object with
 *   `kind`, `initial` and `handlers`), which are registered as kinds without routes.
 * Every node of a cluster must load the same modules (they define the entity kinds).
 */

export async function loadAppModules(paths: readonly string[]): Promise<ConcordApp[]> {
  const apps: ConcordApp[] = [];
  for (const path of paths) {
    let module: Record<string, unknown>;
    try {
      module = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
    } catch (error) {
      throw new Error(`cannot load app module ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
    const found = collect(Object.values(module));
    if (found.apps.length === 0 && found.entities.length === 0) {
      throw new Error(`app module ${path} exports no ConcordApp and no entity definition`);
    }
    apps.push(...found.apps);
    if (found.entities.length > 0) {
      apps.push({ name: `entities of ${path}`, entities: found.entities, routes: () => {} });
    }
  }
  return apps;
}

function collect(values: unknown[]): { apps: ConcordApp[]; entities: AnyEntityDefinition[] } {
  const apps: ConcordApp[] = [];
  const entities: AnyEntityDefinition[] = [];
  const seen = new Set<unknown>();
  const visit = (value: unknown): void => {
    if (seen.has(value)) return;
    seen.add(value);
    if (Array.isArray(value)) {
      for (const item of value) visit(item);
    } else if (isApp(value)) {
      apps.push(value);
    } else if (isEntityDefinition(value)) {
      entities.push(value);
    }
  };
  for (const value of values) visit(value);
  // An entity already part of an exported app is not registered twice.
  const inApps = new Set(apps.flatMap((app) => app.entities));
  return { apps, entities: entities.filter((e) => !inApps.has(e)) };
}

function isApp(value: unknown): value is ConcordApp {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<ConcordApp>;
  return typeof v.name === 'string' && Array.isArray(v.entities) && typeof v.routes === 'function';
}

function isEntityDefinition(value: unknown): value is AnyEntityDefinition {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<AnyEntityDefinition>;
  return (
    typeof v.kind === 'string' &&
    typeof v.initial === 'function' &&
    typeof v.handlers === 'object' &&
    v.handlers !== null
  );
}
