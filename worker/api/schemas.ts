/** OpenAI request bodies, as far as this worker honours them. Unknown fields are ignored, as OpenAI-compatible servers do, except the ones in unsupported.ts. */
import { z } from 'zod';

const tokenIds = z.array(z.number().int().min(0)).min(1);

const sampling = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  seed: z.number().int().min(-(2 ** 31)).max(2 ** 32 - 1).nullable().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullable().optional(),
  ignore_eos: z.boolean().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().nullable().optional() }).nullable().optional(),
  n: z.literal(1, { message: 'only n=1 is supported' }).nullable().optional(),
  // vLLM's check_cache_salt_support (protocol.py).
  cache_salt: z.string().min(1, { message: "Parameter 'cache_salt' must be a non-empty string if provided." }).nullable().optional(),
};

export const CompletionBody = z.object({
  ...sampling,
  prompt: z.union([z.string(), tokenIds, z.tuple([z.string()]), z.tuple([tokenIds])], {
    message: 'prompt must be a string or an array of token ids (one prompt per request)',
  }),
});

/** Messages are checked and turned into the template's inputs by the renderer shared with the router (src/tokenizer/chat.ts). */
export const ChatBody = z.object({
  ...sampling,
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  messages: z.array(z.unknown()).min(1),
});

export type CompletionBody = z.infer<typeof CompletionBody>;
export type ChatBody = z.infer<typeof ChatBody>;
