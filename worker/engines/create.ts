import { loraModules } from '../adapters.js';
import type { WorkerConfig } from '../config.js';
import type { TokenizerFacts } from '../tokenizer.js';
import type { Engine } from './engine.js';
import { SimEngine } from './sim.js';

/** The engine `--engine` names; onnxruntime is only loaded for `onnx`. */
export async function createEngine(cfg: WorkerConfig, tokenizer: TokenizerFacts): Promise<Engine> {
  if (cfg.engine === 'sim') {
    return new SimEngine({
      blockSize: cfg.blockSize,
      numBlocks: cfg.numBlocks,
      eosTokenIds: tokenizer.eosTokenIds,
      vocabSize: tokenizer.vocabSize,
      prefillTokensPerS: cfg.prefillTokensPerS,
      decodeStepMs: cfg.decodeStepMs,
      speedFactor: cfg.speedFactor,
    });
  }
  const { OnnxEngine } = await import('./onnx/index.js');
  return OnnxEngine.create({
    blockSize: cfg.blockSize,
    numBlocks: cfg.numBlocks,
    device: cfg.device,
    modelDir: cfg.model ?? undefined,
    eosTokenIds: tokenizer.eosTokenIds,
    adapters: loraModules(cfg).map((a) => ({ name: a.name, path: a.path! })),
  });
}
