import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import './no-telemetry.js';
import * as ort from 'onnxruntime-node';

export type Device = 'cpu' | 'cuda';

/**
 * Execution providers for a device. `cuda` is checked up front, never silently replaced by
 * the CPU: the binding must list the CUDA provider and its shared library (not shipped in the
 * npm tarball, fetched by the package's install script) must be present.
 */
export function executionProviders(device: Device, deviceId = 0): ort.InferenceSession.ExecutionProviderConfig[] {
  if (device === 'cpu') return ['cpu'];
  if (device !== 'cuda') throw new Error(`unknown --device ${String(device)} (expected cpu or cuda)`);
  const listed = ort.listSupportedBackends().find((b) => b.name === 'cuda');
  const platform = `${process.platform}/${process.arch}`;
  if (!listed) {
    throw new Error(
      `--device cuda: the installed onnxruntime-node (${platform}) has no CUDA execution provider; ` +
        'it is only built for linux/x64. Use --device cpu.',
    );
  }
  if (!listed.bundled) {
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    const dir = bindingDir();
    if (!existsSync(join(dir, lib))) {
      throw new Error(
        `--device cuda: onnxruntime-node's CUDA execution provider library ${lib} is missing from ${dir} ` +
          '(the package install script that downloads it was skipped). Install it with ' +
          '`npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12` (needs CUDA 12 and cuDNN 9 on the machine), or use --device cpu.',
      );
    }
  }
  return [{ name: 'cuda', deviceId }];
}

function bindingDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}
