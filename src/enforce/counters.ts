/**
 * Per-agent action counts over sliding windows, for policies such as "at most 3 repository deletions a
 * minute" (`context.count_minute_class`). The pipeline records a request once it is allowed, so denied
 * attempts do not use up an agent's budget.
 *
 * Each window is a ring of buckets with a running sum: the minute window has 60 one-second buckets and
 * counts the current second plus the 59 before it; the hour window has 60 one-minute buckets and counts
 * the current minute plus the 59 before it. Moving a window forward clears only the buckets that expired
 * (at most 60), so `record` and `counts` are O(1) amortised and allocate nothing for known agents.
 *
 * Memory is bounded by activity: an agent (or one of its classes) with nothing in the last hour counts
 * zero everywhere, so a sweep at most once a minute drops it. `counts` never creates state, so asking
 * about unknown agents costs nothing.
 */

export interface ActionCounts {
  /** All classes, last 60 s. */
  readonly minute: number;
  /** All classes, last hour. */
  readonly hour: number;
  /** This action class, last 60 s. */
  readonly minuteClass: number;
  /** This action class, last hour. */
  readonly hourClass: number;
}

const SLOTS = 60;
const HOUR_MS = 3_600_000;
const SWEEP_EVERY_MS = 60_000;
const ZERO: ActionCounts = Object.freeze({ minute: 0, hour: 0, minuteClass: 0, hourClass: 0 });

/** A ring of `SLOTS` buckets, each `unit` wide (seconds for the minute window, minutes for the hour one). */
class Ring {
  readonly #buckets = new Uint32Array(SLOTS);
  /** Index (in units since the epoch) of the newest bucket. */
  #head = -1;
  #sum = 0;

  /** Slide so that `unit` is the newest bucket; time going backwards is treated as "still the same unit". */
  #advance(unit: number): void {
    if (unit <= this.#head) return;
    if (unit - this.#head >= SLOTS) {
      this.#buckets.fill(0);
      this.#sum = 0;
    } else {
      for (let u = this.#head + 1; u <= unit; u++) {
        const i = u % SLOTS;
        this.#sum -= this.#buckets[i] as number;
        this.#buckets[i] = 0;
      }
    }
    this.#head = unit;
  }

  add(unit: number): void {
    this.#advance(unit);
    const i = this.#head % SLOTS;
    this.#buckets[i] = (this.#buckets[i] as number) + 1;
    this.#sum++;
  }

  total(unit: number): number {
    this.#advance(unit);
    return this.#sum;
  }
}

class Window {
  readonly minute = new Ring();
  readonly hour = new Ring();
  lastMs = 0;

  add(sec: number, min: number, nowMs: number): void {
    this.minute.add(sec);
    this.hour.add(min);
    if (nowMs > this.lastMs) this.lastMs = nowMs;
  }
}

interface AgentState {
  readonly all: Window;
  readonly byClass: Map<string, Window>;
}

export class ActionCounters {
  readonly #agents = new Map<string, AgentState>();
  #lastSweepMs = 0;

  /** Count one allowed request of `actionClass` by `agentId` at `nowMs`. */
  record(agentId: string, actionClass: string, nowMs: number): void {
    const sec = Math.floor(nowMs / 1000);
    const min = Math.floor(nowMs / 60_000);
    let agent = this.#agents.get(agentId);
    if (agent === undefined) {
      agent = { all: new Window(), byClass: new Map() };
      this.#agents.set(agentId, agent);
    }
    let cls = agent.byClass.get(actionClass);
    if (cls === undefined) {
      cls = new Window();
      agent.byClass.set(actionClass, cls);
    }
    agent.all.add(sec, min, nowMs);
    cls.add(sec, min, nowMs);
    if (nowMs - this.#lastSweepMs >= SWEEP_EVERY_MS) this.#sweep(nowMs);
  }

  /** What `agentId` did in the last minute / hour, overall and for `actionClass`. */
  counts(agentId: string, actionClass: string, nowMs: number): ActionCounts {
    const agent = this.#agents.get(agentId);
    if (agent === undefined) return ZERO;
    const sec = Math.floor(nowMs / 1000);
    const min = Math.floor(nowMs / 60_000);
    const cls = agent.byClass.get(actionClass);
    return {
      minute: agent.all.minute.total(sec),
      hour: agent.all.hour.total(min),
      minuteClass: cls === undefined ? 0 : cls.minute.total(sec),
      hourClass: cls === undefined ? 0 : cls.hour.total(min),
    };
  }

  /** Agents currently holding state (for tests and metrics). */
  get size(): number {
    return this.#agents.size;
  }

  /** Drop agents and classes with nothing in the last hour: their counts are all zero anyway. */
  #sweep(nowMs: number): void {
    this.#lastSweepMs = nowMs;
    const idleBefore = nowMs - HOUR_MS;
    for (const [agentId, agent] of this.#agents) {
      if (agent.all.lastMs < idleBefore) {
        this.#agents.delete(agentId);
        continue;
      }
      for (const [cls, w] of agent.byClass) if (w.lastMs < idleBefore) agent.byClass.delete(cls);
    }
  }
}
