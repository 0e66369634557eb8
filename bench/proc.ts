/**
 * Other processes of a bench run: their CPU time on this machine, from
 * /proc (the bench charges each client's run with the broker's CPU, and
 * measures the example worker, which runs in a process of its own), and the
 * command that starts the example worker as users start it.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"

/**
 * Node's arguments for the example worker, taken from `npm start` (flags
 * included), so the bench runs what users run, whatever the script becomes.
 */
export const workerArgs = (): Array<string> => {
  const packageJson = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    readonly scripts: { readonly start: string }
  }
  const [command, ...args] = packageJson.scripts.start.trim().split(/\s+/)
  if (command !== "node") throw new Error(`npm start runs ${command}, not node: the bench cannot start the worker as it does`)
  return args
}

let ticks: number | undefined

/** The process's CPU time so far (user and system) in µs; throws when it is gone. */
export const cpuMicros = (pid: number): number => {
  ticks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  // utime and stime: fields 14 and 15, counted after the command name's closing parenthesis.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticks
}
