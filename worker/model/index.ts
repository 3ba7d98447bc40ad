export { ensureDefaultModel, cacheRoot, type ModelFiles } from './cache.js';
export { loadModelDir, type UserModel } from './model-dir.js';
export { parseModelConfig, type ModelConfig } from './model-config.js';
export { buildDefaultModel, DEFAULT_MODEL, type DefaultModelSpec, type WeightHook } from './default-model.js';
export { loadLoraAdapter, mergeHook, generateLoraAdapter, type LoraAdapter } from './lora.js';
