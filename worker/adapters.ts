/**
 * The LoRA adapters a worker serves by name, as vLLM's `--lora-modules name=path`:
 * a request's `model` names the base model or an adapter; /v1/models lists the base model
 * then each adapter (id = name, root = path, parent = the base model); adapter ids count
 * from 1 in the order given (vLLM's lora_int_id, published as BlockStored.lora_id).
 */
import { ConfigError } from '../src/config/error.js';
import { modelName, type WorkerConfig } from './config.js';

export interface LoraModule {
  name: string;
  /** The adapter directory; null for a sim adapter given by name only. */
  path: string | null;
  /** vLLM's lora_int_id: 1, 2, … in the order the adapters were given. */
  id: number;
}

/** What a request runs under: null for the base model. */
export interface LoraRef {
  name: string;
  id: number;
}

/** `--lora` values → adapters; a bad value is a ConfigError naming it. */
export function loraModules(cfg: Pick<WorkerConfig, 'lora' | 'engine' | 'servedModelName' | 'model'>): LoraModule[] {
  const base = modelName(cfg as WorkerConfig);
  const out: LoraModule[] = [];
  for (const v of cfg.lora) {
    const eq = v.indexOf('=');
    const name = (eq < 0 ? v : v.slice(0, eq)).trim();
    const path = eq < 0 ? null : v.slice(eq + 1).trim() || null;
    if (!name) throw new ConfigError(`invalid --lora ${JSON.stringify(v)}: expected NAME=PATH`);
    if (name === base) throw new ConfigError(`invalid --lora ${JSON.stringify(v)}: the adapter name ${name} is the base model's`);
    if (out.some((m) => m.name === name)) throw new ConfigError(`invalid --lora ${JSON.stringify(v)}: adapter ${name} is given twice`);
    if (cfg.engine === 'onnx' && path === null) throw new ConfigError(`invalid --lora ${JSON.stringify(v)}: the onnx engine needs the adapter's weights (NAME=PATH, PATH a directory with adapter_config.json and adapter_model.safetensors)`);
    out.push({ name, path, id: out.length + 1 });
  }
  return out;
}

/** vLLM's ModelCard list for GET /v1/models: the base model, then the adapters (no max_model_len of their own, as vLLM). */
export function modelCards(base: string, maxModelLen: number, adapters: LoraModule[], root: string = base) {
  return [
    { id: base, object: 'model', created: 0, owned_by: 'kv-router', root, parent: null, max_model_len: maxModelLen },
    ...adapters.map((a) => ({ id: a.name, object: 'model', created: 0, owned_by: 'kv-router', root: a.path ?? a.name, parent: base, max_model_len: null })),
  ];
}

/**
 * The adapter a request's `model` names: null for the base model (or no model given, as vLLM
 * serves the first base model then), undefined when this worker serves no such model.
 */
export function resolveModel(model: string | null | undefined, base: string, adapters: LoraModule[]): LoraRef | null | undefined {
  if (model === undefined || model === null || model === '' || model === base) return null;
  const a = adapters.find((m) => m.name === model);
  return a ? { name: a.name, id: a.id } : undefined;
}
