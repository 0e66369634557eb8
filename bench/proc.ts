/**
 * CPU time of another process on this machine, from /proc: the bench charges
 * each client's run with the broker's CPU, and measures the example worker,
 * which runs in a process of its own.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"

let ticks: number | undefined

/** The process's CPU time so far (user and system) in µs; throws when it is gone. */
export const cpuMicros = (pid: number): number => {
  ticks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  // utime and stime: fields 14 and 15, counted after the command name's closing parenthesis.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticks
}
