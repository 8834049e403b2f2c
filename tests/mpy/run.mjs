// Run a Python program under real MicroPython (the WebAssembly port) in Node.
//
//   node tests/mpy/run.mjs [--firmware DIR] [FILE | -]
//
// The firmware tree (default: $SIPAS_FIRMWARE_DIR or ../../firmware next to this script) is copied
// into MicroPython's in-memory filesystem at /firmware and put first on sys.path, so `import app.codec`
// works as on the device. The current directory is a fresh, empty, writable /scratch. The program is
// read from FILE, or stdin when FILE is "-" or missing. Top-level `await` is allowed: this port has no
// asyncio.run(), so drive coroutines with `await main()`.
//
// Exit status: 0 on success; 1 if the program raised (traceback on stderr); SystemExit(n) exits n;
// 2 on a usage or harness error; 3 if the program awaits something that can never complete. An endless loop cannot be interrupted from inside: the caller must
// apply a timeout (the pytest fixture does).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const here = path.dirname(fileURLToPath(import.meta.url));

function bufferedFd(fd) {
  // Collect bytes and write whole lines (partial lines at exit), synchronously.
  let buf = Buffer.alloc(8192);
  let n = 0;
  const flush = () => {
    if (n) fs.writeSync(fd, buf.subarray(0, n));
    n = 0;
  };
  const put = (bytes) => {
    for (const b of bytes) {
      buf[n++] = b;
      if (b === 10 || n === buf.length) flush();
    }
  };
  return { put, flush };
}

function copyTree(FS, src, dst) {
  FS.mkdir(dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name);
    const d = `${dst}/${ent.name}`;
    if (ent.isDirectory()) copyTree(FS, s, d);
    else if (ent.isFile()) FS.writeFile(d, fs.readFileSync(s));
  }
}

function sysExit(err, stderr) {
  // PythonError: .type is the exception class name, .message the formatted traceback.
  if (err?.type !== "SystemExit") return null;
  const arg = String(err.message).trimEnd().split("\n").pop().replace(/^SystemExit:?\s*/, "");
  if (arg === "" || arg === "None") return 0;
  if (/^-?\d+$/.test(arg)) return Number(arg) & 0xff;
  stderr.put(Buffer.from(`${arg}\n`));
  return 1;
}

async function main() {
  const args = process.argv.slice(2);
  let firmware = process.env.SIPAS_FIRMWARE_DIR || path.resolve(here, "../../firmware");
  let file = "-";
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--firmware" && i + 1 < args.length) firmware = args[++i];
    else if (args[i].startsWith("--")) throw new Error(`unknown option ${args[i]}`);
    else file = args[i];
  }
  if (!fs.statSync(firmware, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`firmware directory not found: ${firmware}`);
  }
  const code = fs.readFileSync(file === "-" ? 0 : file, "utf8");

  const out = bufferedFd(1);
  const err = bufferedFd(2);
  const mp = await loadMicroPython({
    stdout: out.put,
    stderr: err.put,
    linebuffer: false,
    heapsize: 1024 * 1024,
  });
  copyTree(mp.FS, path.resolve(firmware), "/firmware");
  mp.FS.mkdir("/scratch");
  mp.runPython(
    "import sys, os\nsys.path.insert(0, '/firmware')\nos.chdir('/scratch')\ndel sys, os\n",
  );

  let status = 0;
  try {
    await mp.runPythonAsync(code);
  } catch (e) {
    const exitCode = sysExit(e, err);
    if (exitCode !== null) status = exitCode;
    else {
      out.flush();
      err.put(Buffer.from(e?.type ? String(e.message) : `harness: ${e?.stack || e}\n`));
      status = e?.type ? 1 : 2;
    }
  }
  out.flush();
  err.flush();
  // Exit now: a still-pending asyncio task (a timer) must not keep the process alive.
  process.exit(status);
}

// The event loop ran dry while the program was still awaiting something that can never happen.
process.on("beforeExit", () => {
  fs.writeSync(2, "run.mjs: deadlock: the program awaits something that never completes\n");
  process.exit(3);
});

main().catch((e) => {
  fs.writeSync(2, `run.mjs: ${e?.stack || e}\n`);
  process.exit(2);
});
