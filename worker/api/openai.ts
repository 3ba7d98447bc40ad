/** OpenAI response shapes for completions and chat completions, whole and streamed. */
import type { FinishReason } from '../messages.js';

export type Kind = 'completion' | 'chat';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(prompt: number, completion: number, cached: number): Usage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

interface Meta {
  id: string;
  created: number;
  model: string;
}

export function fullResponse(kind: Kind, m: Meta, text: string, finish: FinishReason, u: Usage) {
  if (kind === 'completion') {
    return {
      id: m.id,
      object: 'text_completion',
      created: m.created,
      model: m.model,
      choices: [{ index: 0, text, logprobs: null, finish_reason: finish }],
      usage: u,
    };
  }
  return {
    id: m.id,
    object: 'chat.completion',
    created: m.created,
    model: m.model,
    choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish }],
    usage: u,
  };
}

/** One streamed chunk; `usage` is null on every chunk when the client asked for a final usage chunk, absent otherwise. */
export function chunk(
  kind: Kind,
  m: Meta,
  delta: { text?: string; role?: boolean },
  finish: FinishReason | null,
  withUsage: boolean,
) {
  const base = { id: m.id, object: kind === 'completion' ? 'text_completion' : 'chat.completion.chunk', created: m.created, model: m.model };
  const choice =
    kind === 'completion'
      ? { index: 0, text: delta.text ?? '', logprobs: null, finish_reason: finish }
      : {
          index: 0,
          delta: {
            ...(delta.role ? { role: 'assistant' } : {}),
            ...(delta.text !== undefined ? { content: delta.text } : {}),
          },
          logprobs: null,
          finish_reason: finish,
        };
  return withUsage ? { ...base, choices: [choice], usage: null } : { ...base, choices: [choice] };
}

/** The final chunk of `stream_options.include_usage`: no choices, just usage. */
export function usageChunk(kind: Kind, m: Meta, u: Usage) {
  return {
    id: m.id,
    object: kind === 'completion' ? 'text_completion' : 'chat.completion.chunk',
    created: m.created,
    model: m.model,
    choices: [],
    usage: u,
  };
}
