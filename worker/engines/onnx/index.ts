export { OnnxEngine, type OnnxEngineOptions } from './onnx-engine.js';
export { executionProviders, type Device } from './device.js';
export { discoverModelIo, type ModelIo } from './model-io.js';
export { KvPool } from './kv-pool.js';
