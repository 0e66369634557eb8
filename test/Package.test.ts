/**
 * The library as another project gets it: `npm run build` compiles src/ to
 * JavaScript with type declarations (Node does not strip types inside
 * node_modules), and the built entry point, loaded by plain Node, exposes the
 * public modules. The worker process starts with one command wherever users
 * start it.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("Package", () => {
  it("builds to JavaScript and declarations whose entry point exposes the public API", () => {
    // Inside the project, so that its dependencies resolve as a user's would.
    const out = mkdtempSync(join(root, ".build-test-"))
    try {
      execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json", "--outDir", out], {
        cwd: root,
        stdio: "pipe"
      })
      assert.isTrue(existsSync(join(out, "index.d.ts")))
      // The package's bin, the dead-letter command.
      assert.isTrue(existsSync(join(out, "dlq-cli.js")))
      const script = `
        const api = await import(${JSON.stringify(pathToFileURL(join(out, "index.js")).href)})
        console.log(JSON.stringify(Object.fromEntries(Object.entries(api).map(([name, module]) =>
          [name, Object.keys(module).filter((key) => typeof module[key] === "function").sort()]))))
      `
      const exported = JSON.parse(
        execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: root, encoding: "utf8" })
      ) as Record<string, Array<string>>
      assert.includeMembers(exported.Consumer ?? [], ["make"])
      assert.includeMembers(exported.Worker ?? [], ["make", "layer", "run"])
      assert.includeMembers(exported.Outcome ?? [], ["retry", "decide"])
      assert.includeMembers(exported.Topology ?? [], ["make", "declare"])
      assert.includeMembers(Object.keys(exported), ["Publisher", "Health", "Status", "WorkerConfig", "Metrics", "Options"])
      assert.includeMembers(exported.DeadLetters ?? [], ["list", "show", "replay", "purge"])
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  }, 60_000)

  // Users start the worker three ways; a flag added to one and not the others would make them run different workers.
  it("starts the worker with one command: npm start, the Dockerfile's and the README's production command", () => {
    const read = (file: string) => readFileSync(join(root, file), "utf8")
    const start = (JSON.parse(read("package.json")) as { scripts: { start: string } }).scripts.start
    assert.match(start, /^node .*src\/main\.ts$/)
    const cmd = /^CMD (\[.*\])$/m.exec(read("Dockerfile"))?.[1]
    assert.deepStrictEqual(JSON.parse(cmd ?? "[]"), start.split(" "))
    assert.include(read("README.md"), `In production run \`${start}\` directly`)
  })
})
