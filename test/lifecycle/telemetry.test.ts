// No telemetry: an onnx kv-worker with a fresh HOME and TMPDIR writes nothing outside the model
// cache (KV_ROUTER_CACHE_DIR) and the temp dir's expected files (tsx's compile cache). Without
// ORT_DISABLE_TELEMETRY, onnxruntime-node writes mat-debug-<pid>.log into TMPDIR and files under
// ~/.cache/Microsoft/ (checked first, so the test can see what it looks for).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { freePort } from '../../src/net/free-port.js';
import { cacheRoot, ensureDefaultModel } from '../../worker/model/index.js';
import { freshTmp, launch, leftovers, root, waitUntil } from './procs.js';

// Built here when missing (a fresh machine), so the test never skips.
const modelFile = (await ensureDefaultModel()).modelPath;

// The CI markers onnxruntime checks (found in libonnxruntime.so; `CI` itself is one of them).
const ciVariables = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION', 'SYSTEM_TEAMFOUNDATIONCOLLECTIONURI'];

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) if (!e.isDirectory()) out.push(relative(dir, join(e.parentPath, e.name)));
  return out;
}

test('an onnx worker writes nothing outside the model cache and its temp dir', { timeout: 180_000 }, async () => {
  const base = freshTmp();
  const home = join(base, 'home');
  const tmp = join(base, 'tmp');
  mkdirSync(home);
  mkdirSync(tmp);
  try {
    // Positive control: onnxruntime-node with telemetry on does write here.
    const script = join(base, 'load.cjs');
    writeFileSync(script, `require(${JSON.stringify(join(root, 'node_modules', 'onnxruntime-node'))}).InferenceSession.create(${JSON.stringify(modelFile)}).then(() => {});`);
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, TMPDIR: tmp };
    // onnxruntime also turns telemetry off by itself under CI (it reads these variables), so the
    // control clears them; without that, the control sees nothing on a CI machine.
    for (const k of ['ORT_DISABLE_TELEMETRY', ...ciVariables]) delete env[k];
    const control = spawnSync(process.execPath, [script], { env, timeout: 60_000, encoding: 'utf8' });
    assert.equal(control.status, 0, `control process failed: ${control.stderr}`);
    assert.ok(readdirSync(tmp).some((f) => f.startsWith('mat-debug-')), `control: telemetry wrote into TMPDIR: ${readdirSync(tmp).join(', ')}`);
    rmSync(script);
    for (const d of [home, tmp]) for (const f of readdirSync(d)) rmSync(join(d, f), { recursive: true, force: true });

    const port = await freePort();
    const w = launch(process.execPath, [join(root, 'bin', 'kv-worker.js'), '--engine', 'onnx', '--port', String(port), '--kv-events-config', JSON.stringify({ endpoint: `ipc://${tmp}/pub.sock` })], {
      HOME: home,
      TMPDIR: tmp,
      KV_ROUTER_CACHE_DIR: cacheRoot(),
      // Unset (spawn drops undefined values): the worker must turn telemetry off by itself.
      ...Object.fromEntries(['ORT_DISABLE_TELEMETRY', ...ciVariables].map((k) => [k, undefined])),
    });
    try {
      await waitUntil('the onnx worker to listen', 120_000, () => /listening on/.test(w.output()) || w.proc.exitCode !== null);
      assert.match(w.output(), /listening on/, w.output());
      const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Hello', max_tokens: 4 }) });
      assert.equal(res.status, 200, await res.clone().text());
      await res.text();
      w.proc.kill('SIGTERM');
      assert.equal(await w.exited, 0, w.output());
    } finally {
      w.proc.kill('SIGKILL');
    }
    assert.deepEqual(filesUnder(home), [], 'nothing written under HOME');
    assert.deepEqual(leftovers(tmp), [], 'nothing left in TMPDIR');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
