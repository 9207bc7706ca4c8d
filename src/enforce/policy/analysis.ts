/**
 * Static analysis of a policy's JSON form, done once at load (docs/architecture.md "Enforce"): which
 * context attributes and variables a policy reads, which actions it names, and whether its action scope
 * admits a class. A request then sends Cedar only what the policies it can reach read, and policies that
 * read the same inputs share a group and a memo (plan.ts, evaluate.ts). Unknown uses count as "reads all".
 */
import type { EntityUidJson, PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { ACTION_TYPE, compare } from './schema.js';

/** What a policy reads, decided once from its JSON form. */
export interface Usage {
  readonly contextKeys: Set<string>;
  allContext: boolean;
  principal: boolean;
  resourceId: boolean;
  resourceEntity: boolean;
  actionEntity: boolean;
  readonly actions: Set<string>;
  /** The inputs read, as text: policies with the same signature share a group. */
  signature: string;
  /**
   * False when the JSON form lost precision (a Long literal beyond ±2^53 becomes a JS float): such a
   * policy is pre-parsed from its text, with its action scope as written.
   */
  lossless: boolean;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isVar(v: unknown, name: string): boolean {
  return isObject(v) && v.Var === name;
}

export function usageOf(json: PolicyJson): Usage {
  const u: Usage = {
    contextKeys: new Set(),
    allContext: false,
    principal: json.principal.op !== 'All',
    resourceId: json.resource.op !== 'All',
    resourceEntity: false,
    actionEntity: false,
    actions: new Set(),
    signature: '',
    lossless: !hasUnsafeNumber(json),
  };
  collectActions(json.action, u);
  for (const clause of json.conditions) walk(clause.body, u);
  // Kept as written, `action in <group>` needs the action's groups at request time.
  if (!u.lossless && json.action.op === 'in') u.actionEntity = true;
  const reads = u.allContext ? ['context.*'] : [...u.contextKeys].sort(compare).map((k) => `context.${k}`);
  if (u.principal) reads.push('principal');
  if (u.resourceId) reads.push('resource');
  if (u.resourceEntity) reads.push('resource.*');
  if (u.actionEntity) reads.push('action');
  u.signature = reads.join(' ');
  return u;
}

function hasUnsafeNumber(node: unknown): boolean {
  if (typeof node === 'number') return !Number.isSafeInteger(node);
  if (Array.isArray(node)) return node.some(hasUnsafeNumber);
  if (isObject(node)) return Object.values(node).some(hasUnsafeNumber);
  return false;
}

function collectActions(node: unknown, u: Usage): void {
  if (Array.isArray(node)) {
    for (const n of node) collectActions(n, u);
  } else if (isObject(node)) {
    if (node.type === ACTION_TYPE && typeof node.id === 'string') u.actions.add(node.id);
    for (const v of Object.values(node)) collectActions(v, u);
  }
}

/** Record which variables and context attributes an expression reads (conservatively: unknown use = all). */
function walk(node: unknown, u: Usage): void {
  if (Array.isArray(node)) {
    for (const n of node) walk(n, u);
    return;
  }
  if (!isObject(node)) return;
  for (const op of ['.', 'has'] as const) {
    const inner = node[op];
    if (isObject(inner) && isVar(inner.left, 'context')) {
      const first = Array.isArray(inner.attr) ? (inner.attr[0] as unknown) : inner.attr;
      if (typeof first === 'string') u.contextKeys.add(first);
      else u.allContext = true;
      return;
    }
  }
  if (typeof node.Var === 'string') {
    if (node.Var === 'context') u.allContext = true;
    else if (node.Var === 'principal') u.principal = true;
    else if (node.Var === 'resource') u.resourceEntity = true;
    else if (node.Var === 'action') u.actionEntity = true;
    return;
  }
  if (isObject(node.__entity)) {
    collectActions(node.__entity, u);
    return;
  }
  for (const v of Object.values(node)) walk(v, u);
}

/** Does the policy's action scope admit this class? (`groups`: the class's `prefix.*` ancestors.) */
export function actionScopeMatches(json: PolicyJson, actionClass: string, groups: readonly string[]): boolean {
  const scope = json.action;
  if (scope.op === 'All') return true;
  const ids: string[] = [];
  if (scope.op === '==') {
    if ('entity' in scope) return uidId(scope.entity) === actionClass;
    return true; // a template slot: not reachable for static policies; keep the policy (Cedar decides)
  }
  if ('entity' in scope) ids.push(uidId(scope.entity));
  else for (const e of scope.entities) ids.push(uidId(e));
  return ids.some((id) => id === actionClass || groups.includes(id));
}

function uidId(uid: EntityUidJson): string {
  return '__entity' in uid ? uid.__entity.id : uid.id;
}
