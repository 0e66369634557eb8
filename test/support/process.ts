/**
 * Runs the example worker as a real process (`node src/main.ts`, as a process
 * manager would: npm does not pass signals on), with JSON logs, and reads what
 * it prints.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Effect, type Scope } from "effect"
import { freePort } from "./ports.ts"

const root = fileURLToPath(new URL("../..", import.meta.url))

export interface LogLine {
  readonly message: unknown
  readonly level: string
  readonly annotations?: Readonly<Record<string, unknown>>
  readonly [key: string]: unknown
}

export interface WorkerProcess {
  /** Every line printed (stdout and stderr). */
  readonly output: Array<string>
  /** The stdout lines that parsed as JSON log lines. */
  readonly logs: Array<LogLine>
  readonly waitFor: (what: string, check: (logs: ReadonlyArray<LogLine>) => boolean, timeoutMs?: number) => Effect.Effect<void>
  readonly signal: (signal: NodeJS.Signals) => void
  /** Waits for the process to exit; its exit code (null if killed by a signal). */
  readonly exit: (timeoutMs?: number) => Effect.Effect<number | null>
}

export const messageText = (line: LogLine) => Array.isArray(line.message) ? line.message.join(" ") : String(line.message)

/** Runs `script` (default: the example worker) with `env` on top of this process's environment. */
export const spawnWorker = (
  env: Record<string, string>,
  options: { readonly script?: string } = {}
): Effect.Effect<WorkerProcess, never, Scope.Scope> =>
  Effect.gen(function*() {
    const output: Array<string> = []
    const logs: Array<LogLine> = []
    let exitCode: number | null | undefined
    const exitWaiters: Array<() => void> = []

    // Its own health port, unless the test chose one.
    const httpPort = String(yield* freePort)
    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, [options.script ?? "src/main.ts"], {
          cwd: root,
          env: { ...process.env, LOG_FORMAT: "json", HTTP_PORT: httpPort, ...env },
          stdio: ["ignore", "pipe", "pipe"]
        })
      ),
      (child) => Effect.sync(() => exitCode === undefined && child.kill("SIGKILL"))
    )
    const collect = (stream: NodeJS.ReadableStream | null, parse: boolean) => {
      let buffer = ""
      stream?.setEncoding("utf8")
      stream?.on("data", (chunk: string) => {
        buffer += chunk
        let newline = buffer.indexOf("\n")
        while (newline >= 0) {
          const line = buffer.slice(0, newline)
          buffer = buffer.slice(newline + 1)
          output.push(line)
          if (parse) {
            try {
              logs.push(JSON.parse(line) as LogLine)
            } catch {
              // not a log line
            }
          }
          newline = buffer.indexOf("\n")
        }
      })
    }
    collect(child.stdout, true)
    collect(child.stderr, false)
    child.on("exit", (code) => {
      exitCode = code
      for (const wake of exitWaiters.splice(0)) wake()
    })

    const fail = (what: string) =>
      Effect.die(new Error(`worker process: timed out waiting for ${what}. Output:\n${output.join("\n")}`))

    return {
      output,
      logs,
      waitFor: (what, check, timeoutMs = 20_000) =>
        Effect.gen(function*() {
          const deadline = Date.now() + timeoutMs
          while (!check(logs)) {
            if (Date.now() > deadline || exitCode !== undefined) return yield* fail(what)
            yield* Effect.sleep(50)
          }
        }),
      signal: (signal) => {
        child.kill(signal)
      },
      exit: (timeoutMs = 30_000) =>
        Effect.callback<number | null>((resume) => {
          if (exitCode !== undefined) return resume(Effect.succeed(exitCode))
          exitWaiters.push(() => resume(Effect.succeed(exitCode ?? null)))
        }).pipe(
          Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => fail("exit") })
        )
    } satisfies WorkerProcess
  })
