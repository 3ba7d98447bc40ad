"""An independent oracle for chat rendering: vLLM's chat preprocessing (vllm/entrypoints/chat_utils.py,
string content format) and transformers' render_jinja_template, written from their documented
behaviour with jinja2 and HF tokenizers, not from our TypeScript.

stdin: {"tokenizer_json", "tokenizer_config", "cases": [request bodies]}
stdout: [{"text": rendered, "ids": token ids} | {"error": message}]
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def conversation(messages):
    out = []
    for m in messages:
        content = m.get("content")
        if content is None:
            parts = []
        elif isinstance(content, str):
            parts = [content]
        else:
            parts = [p if isinstance(p, str) else p.get("text") for p in content]
            parts = [p for p in parts if p is not None]
        msg = {"role": m["role"], "content": "\n".join(parts)}
        if m["role"] == "assistant":
            if m.get("tool_calls") is not None:
                msg["tool_calls"] = [json.loads(json.dumps(c)) for c in m["tool_calls"]]
            if m.get("reasoning") is not None:
                msg["reasoning"] = m["reasoning"]
                msg["reasoning_content"] = m["reasoning"]
        elif m["role"] == "tool" and "tool_call_id" in m:
            msg["tool_call_id"] = m["tool_call_id"]
        if isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    for msg in out:
        calls = msg.get("tool_calls")
        if msg["role"] == "assistant" and isinstance(calls, list):
            if not calls:
                del msg["tool_calls"]
            for c in calls:
                args = c["function"].get("arguments")
                c["function"]["arguments"] = (json.loads(args) if not isinstance(args, dict) else args) if args else {}
    return out


def tool_dump(t):
    fn = dict(t["function"])
    dumped_fn = {"name": fn.pop("name"), "description": fn.pop("description", None), "parameters": fn.pop("parameters", None), **fn}
    rest = {k: v for k, v in t.items() if k not in ("type", "function")}
    return {"type": t.get("type", "function"), "function": dumped_fn, **rest}


def render(env, template, special, body):
    chat = conversation(body["messages"])
    kwargs = {
        "add_generation_prompt": body.get("add_generation_prompt", True),
        "continue_final_message": body.get("continue_final_message", False),
        "tools": None if body.get("tools") is None else [tool_dump(t) for t in body["tools"]],
        "documents": body.get("documents"),
    }
    kwargs.update(body.get("chat_template_kwargs") or {})
    add_gen = kwargs.pop("add_generation_prompt")
    cont = kwargs.pop("continue_final_message")
    tools = kwargs.pop("tools")
    documents = kwargs.pop("documents")
    text = env.from_string(template).render(messages=chat, tools=tools, documents=documents,
                                            add_generation_prompt=add_gen, **special, **kwargs)
    if cont:
        final = chat[-1]["content"]
        loc = text.rindex(final.strip())
        if text[loc:loc + len(final.lstrip())] == final:
            text = text[:loc + len(final.lstrip())]
        else:
            text = text[:loc + len(final.strip())]
    return text


def main():
    job = json.load(sys.stdin)
    config = json.load(open(job["tokenizer_config"]))
    tok = Tokenizer.from_file(job["tokenizer_json"])
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
    special = {}
    for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
        v = config.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            special[k] = v
    out = []
    for body in job["cases"]:
        try:
            text = render(env, config["chat_template"], special, body)
            out.append({"text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
        except Exception as e:  # noqa: BLE001
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


main()
