/**
 * Chat requests turned into the chat template's inputs exactly as vLLM does it (text-only models,
 * the "string" content format), shared by the router (to predict the engine's tokens) and our
 * worker (to compute them):
 * - vllm/entrypoints/chat_utils.py `_parse_chat_message_content(_parts)`: text parts of one
 *   message joined with "\n", null content → "", assistant `tool_calls` (and `reasoning`, given
 *   to the template as `reasoning` and `reasoning_content`), the tool message's `tool_call_id`,
 *   `name`, a developer message's `tools`;
 * - `_postprocess_messages`: tool-call `arguments` JSON strings parsed to objects (empty → {}),
 *   an empty `tool_calls` list dropped;
 * - serving_chat.py: `tools` as `tool.model_dump()` (type, function{name, description, parameters}),
 *   `documents`, `add_generation_prompt` (default true), `continue_final_message`, then
 *   `chat_template_kwargs` on top (so they can override the others, as vLLM's dict update does).
 */

/** What the chat template is rendered with. */
export interface ChatTemplateInput {
  messages: Record<string, unknown>[];
  tools: Record<string, unknown>[] | null;
  documents: unknown[] | null;
  addGenerationPrompt: boolean;
  continueFinalMessage: boolean;
  /** `chat_template_kwargs`, e.g. Qwen3's `{enable_thinking: false}`. */
  kwargs: Record<string, unknown>;
}

/**
 * `render`: the template's inputs. `unroutable`: valid for an engine, but not renderable here
 * (non-text content parts need the model's multimodal processor). `invalid`: the engine answers
 * 400 too.
 */
export type ChatParse =
  | { kind: 'render'; input: ChatTemplateInput }
  | { kind: 'unroutable'; reason: string }
  | { kind: 'invalid'; message: string; param: string };

/** Part types whose content is text, and the field holding it (vLLM's TEXT_PART_TYPES / MM_PARSER_MAP). */
const TEXT_PARTS: Record<string, string> = { text: 'text', input_text: 'text', refusal: 'refusal' };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

class Unroutable extends Error {}
class Invalid extends Error {
  constructor(message: string, readonly param: string) {
    super(message);
  }
}

/** A chat request body (already known to be an object) → the template's inputs. */
export function parseChat(body: Obj): ChatParse {
  try {
    return { kind: 'render', input: chatInput(body) };
  } catch (e) {
    if (e instanceof Unroutable) return { kind: 'unroutable', reason: e.message };
    if (e instanceof Invalid) return { kind: 'invalid', message: e.message, param: e.param };
    throw e;
  }
}

function chatInput(body: Obj): ChatTemplateInput {
  // A per-request template (vLLM's `chat_template` parameter) is the engine's to render.
  if (body.chat_template != null) throw new Unroutable('the request brings its own chat_template');
  const msgs = body.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) throw new Invalid('messages: must be an array of {role, content} messages, not empty', 'messages');
  const messages = msgs.map((m, i) => conversationMessage(m, i));
  for (const m of messages) postprocessToolCalls(m);
  const addGenerationPrompt = optBool(body, 'add_generation_prompt') ?? true;
  const continueFinalMessage = optBool(body, 'continue_final_message') ?? false;
  if (addGenerationPrompt && continueFinalMessage) {
    // vLLM's ChatCompletionRequest.check_generation_prompt.
    throw new Invalid('Cannot set both `continue_final_message` and `add_generation_prompt` to True.', 'continue_final_message');
  }
  const kw = body.chat_template_kwargs;
  if (kw != null && !isObj(kw)) throw new Invalid('chat_template_kwargs: must be an object', 'chat_template_kwargs');
  const docs = body.documents;
  if (docs != null && !Array.isArray(docs)) throw new Invalid('documents: must be an array', 'documents');
  return {
    messages,
    tools: toolDicts(body.tools),
    documents: (docs as unknown[] | null | undefined) ?? null,
    addGenerationPrompt,
    continueFinalMessage,
    kwargs: (kw as Obj | null | undefined) ?? {},
  };
}

function optBool(body: Obj, key: string): boolean | null {
  const v = body[key];
  if (v == null) return null;
  if (typeof v !== 'boolean') throw new Invalid(`${key}: must be a boolean`, key);
  return v;
}

function conversationMessage(m: unknown, i: number): Obj {
  if (!isObj(m)) throw new Invalid(`messages.${i}: must be a message object`, 'messages');
  if (typeof m.role !== 'string' || m.role === '') throw new Invalid(`messages.${i}.role: must be a non-empty string`, 'messages');
  const role = m.role;
  const out: Obj = { role, content: contentText(m.content, i) };
  if (role === 'assistant') {
    if (m.tool_calls != null) {
      if (!Array.isArray(m.tool_calls)) throw new Invalid(`messages.${i}.tool_calls: must be an array`, 'messages');
      out.tool_calls = structuredClone(m.tool_calls);
    }
    if (m.reasoning != null) {
      out.reasoning = m.reasoning;
      out.reasoning_content = m.reasoning;
    }
  } else if (role === 'tool') {
    if ('tool_call_id' in m) out.tool_call_id = m.tool_call_id;
  }
  if (typeof m.name === 'string') out.name = m.name;
  if (role === 'developer') out.tools = m.tools ?? null;
  return out;
}

/** Text of a message's content, its text parts joined with "\n"; a non-text part makes the request unroutable. */
function contentText(c: unknown, i: number): string {
  if (c == null) return '';
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) throw new Invalid(`messages.${i}.content: must be a string, an array of content parts or null`, 'messages');
  const texts: string[] = [];
  c.forEach((p, j) => {
    if (typeof p === 'string') {
      texts.push(p);
      return;
    }
    if (!isObj(p)) throw new Invalid(`messages.${i}.content.${j}: must be a content part object`, 'messages');
    const type = p.type;
    const field = typeof type === 'string' ? TEXT_PARTS[type] : undefined;
    if (field === undefined) {
      const what = typeof type === 'string' ? `'${type}'` : `without a type (${Object.keys(p).join(', ') || 'empty'})`;
      throw new Unroutable(`messages.${i}.content.${j}: content part ${what} is not text; only the engine's multimodal processor can render it`);
    }
    const text = p[field];
    // vLLM skips a text part whose text is missing.
    if (text == null) return;
    if (typeof text !== 'string') throw new Invalid(`messages.${i}.content.${j}.${field}: must be a string`, 'messages');
    texts.push(text);
  });
  return texts.join('\n');
}

/** vLLM's `_postprocess_messages`: templates get tool-call arguments as objects, not JSON strings. */
function postprocessToolCalls(m: Obj): void {
  if (m.role !== 'assistant' || !Array.isArray(m.tool_calls)) return;
  if (m.tool_calls.length === 0) {
    delete m.tool_calls;
    return;
  }
  for (const call of m.tool_calls as unknown[]) {
    if (!isObj(call) || !isObj(call.function)) throw new Invalid('assistant tool_calls entries must be objects with a function', 'messages');
    const fn = call.function;
    const args = fn.arguments;
    if (!args) fn.arguments = {};
    else if (typeof args === 'string') {
      try {
        fn.arguments = JSON.parse(args);
      } catch {
        throw new Invalid(`tool call arguments are not valid JSON: ${args.slice(0, 80)}`, 'messages');
      }
    }
  }
}

/** vLLM's `[tool.model_dump() for tool in request.tools]`: declared fields first, defaults filled in, extra keys after. */
function toolDicts(tools: unknown): Obj[] | null {
  if (tools == null) return null;
  if (!Array.isArray(tools)) throw new Invalid('tools: must be an array', 'tools');
  return tools.map((t, i) => {
    if (!isObj(t) || !isObj(t.function) || typeof t.function.name !== 'string') throw new Invalid(`tools.${i}: must be {type: "function", function: {name, ...}}`, 'tools');
    const { type, function: fn, ...extraTool } = t;
    const { name, description, parameters, ...extraFn } = fn;
    return {
      type: type ?? 'function',
      function: { name, description: description ?? null, parameters: parameters ?? null, ...extraFn },
      ...extraTool,
    };
  });
}

/**
 * transformers' `render_jinja_template` with `continue_final_message`: the rendered chat is cut
 * right after the final message's content, so generation continues it.
 */
export function cutAfterFinalMessage(rendered: string, messages: Record<string, unknown>[]): string {
  const last = messages.at(-1)?.content;
  if (typeof last !== 'string') throw new Error('continue_final_message is set but we could not find any text to continue in the final message!');
  const stripped = last.trim();
  const at = rendered.lastIndexOf(stripped);
  if (at < 0) throw new Error('continue_final_message is set but the final message does not appear in the chat after applying the chat template!');
  const lstripped = last.replace(/^\s+/, '');
  // The template kept the message's trailing space: cut after all of it; else after the stripped text.
  if (rendered.slice(at, at + lstripped.length) === last) return rendered.slice(0, at + lstripped.length);
  return rendered.slice(0, at + stripped.length);
}
