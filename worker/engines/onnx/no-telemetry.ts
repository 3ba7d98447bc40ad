/**
 * Imported before onnxruntime-node by every module that loads it (ES modules evaluate their imports
 * in order): without this, the library's telemetry SDK writes mat-debug-<pid>.log into the temp dir
 * and files under ~/.cache/Microsoft/ as soon as it loads. A local worker sends and leaves nothing.
 */
process.env.ORT_DISABLE_TELEMETRY = '1';
