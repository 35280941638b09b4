// Conversions between the protobuf Duration and the milliseconds this package's API speaks.
// Every duration in the public API is a number of milliseconds (`ttlMs`, `waitMs`, …), like
// setTimeout; the protos' Durations stay inside the package.
import type { Duration } from "./gen/google/protobuf/duration.js";

/** A protobuf Duration of `ms` milliseconds (fractions down to nanoseconds). */
export function toDuration(ms: number): Duration {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`a duration must be a finite number of milliseconds >= 0, got ${ms}`);
  }
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** `toDuration(ms)`, or undefined when `ms` is undefined (the server's default applies). */
export function optionalDuration(ms: number | undefined): Duration | undefined {
  return ms === undefined ? undefined : toDuration(ms);
}

/** Milliseconds of a protobuf Duration; 0 when absent. */
export function fromDuration(duration: Duration | undefined): number {
  if (!duration) return 0;
  return Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}
