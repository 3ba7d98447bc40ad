/**
 * Request parameters an OpenAI-compatible engine (vLLM) implements and this worker does not.
 * Sent with a value that would change the answer, they get a 400 naming the parameter rather
 * than a 200 that silently ignores them; their no-op defaults are accepted.
 */
import { ApiError } from './errors.js';

type Check = (v: unknown) => boolean;

const isNull: Check = (v) => v == null;
const isFalse: Check = (v) => v == null || v === false;
const isZero: Check = (v) => v == null || v === 0;
const isEmpty: Check = (v) => v == null || (Array.isArray(v) ? v.length === 0 : typeof v === 'object' && Object.keys(v as object).length === 0);

/** Parameter → "the value does nothing", for both endpoints. */
const COMMON: Record<string, Check> = {
  logprobs: (v) => v == null || v === false,
  top_logprobs: isZero,
  prompt_logprobs: isNull,
  echo: isFalse,
  response_format: (v) => v == null || (typeof v === 'object' && (v as { type?: unknown }).type === 'text'),
  presence_penalty: isZero,
  frequency_penalty: isZero,
  repetition_penalty: (v) => v == null || v === 1,
  top_k: (v) => v == null || v === 0 || v === -1,
  min_p: isZero,
  min_tokens: isZero,
  logit_bias: isEmpty,
  stop_token_ids: isEmpty,
  bad_words: isEmpty,
  best_of: (v) => v == null || v === 1,
  suffix: isNull,
  guided_json: isNull,
  guided_regex: isNull,
  guided_choice: isNull,
  guided_grammar: isNull,
  structured_outputs: isNull,
  include_stop_str_in_output: isFalse,
  skip_special_tokens: (v) => v == null || v === true,
  allowed_token_ids: isNull,
  chat_template: isNull,
};

/**
 * The first unsupported parameter of a body, as a 400. `tools` are rendered into the prompt but
 * tool calls are never parsed from the output, so tools are accepted only with
 * `tool_choice: "none"` (vLLM still renders them then).
 */
export function rejectUnsupported(body: Record<string, unknown>): void {
  for (const [param, isNoop] of Object.entries(COMMON)) {
    if (param in body && !isNoop(body[param])) {
      throw new ApiError(400, `${param} is not supported by this worker (kv-worker implements temperature, top_p, seed, stop, max_tokens and n=1)`, 'invalid_request_error', param, 'unsupported_parameter');
    }
  }
  if (!isEmpty(body.tools) && body.tool_choice !== 'none') {
    throw new ApiError(400, 'tools: tool calling is not implemented by this worker; send tool_choice "none" to have the tools rendered into the prompt without calls', 'invalid_request_error', 'tools', 'unsupported_parameter');
  }
  if (body.tool_choice != null && body.tool_choice !== 'none' && body.tool_choice !== 'auto') {
    throw new ApiError(400, 'tool_choice: tool calling is not implemented by this worker', 'invalid_request_error', 'tool_choice', 'unsupported_parameter');
  }
}
