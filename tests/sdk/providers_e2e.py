"""End to end through the official `openai` Python SDK: chat, stream, tools round trip and
images against Anthropic- and Gemini-backed models, plus Gemini embeddings, all answered by
`tollgate mock-upstream`. Run by run_providers_e2e.sh, which starts both servers.

Usage: python providers_e2e.py http://127.0.0.1:PORT/v1
"""

import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
TOOLS = [{"type": "function", "function": {"name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
       "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


for model in ["claude-chat", "gemini-chat"]:
    hello = [{"role": "user", "content": "hello there"}]
    whole = client.chat.completions.create(model=model, messages=hello)
    check(f"{model} chat", whole.choices[0].finish_reason == "stop" and whole.choices[0].message.content)

    text, usage = "", None
    for chunk in client.chat.completions.create(model=model, messages=hello, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    check(f"{model} stream text", text == whole.choices[0].message.content, repr(text))
    check(f"{model} stream usage", usage is not None and usage.total_tokens == whole.usage.total_tokens)

    ask = [{"role": "user", "content": "Weather in Paris?"}]
    call = client.chat.completions.create(model=model, messages=ask, tools=TOOLS)
    msg = call.choices[0].message
    check(f"{model} tool call", call.choices[0].finish_reason == "tool_calls" and msg.tool_calls
          and msg.tool_calls[0].function.name == "get_weather")
    answer = client.chat.completions.create(model=model, tools=TOOLS, messages=ask + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18C"}])
    check(f"{model} tool round trip", answer.choices[0].finish_reason == "stop")

    with client.beta.chat.completions.stream(model=model, messages=ask, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    check(f"{model} streamed tool call", final.choices[0].finish_reason == "tool_calls"
          and final.choices[0].message.tool_calls[0].function.arguments == msg.tool_calls[0].function.arguments)

    image = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    check(f"{model} image", image.choices[0].finish_reason == "stop")

emb = client.embeddings.create(model="gemini-embed", input=["hello world", "again"])
check("gemini embeddings", len(emb.data) == 2 and len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens > 0)
try:
    client.embeddings.create(model="claude-embed", input="x")
    check("anthropic embeddings refused", False)
except openai.BadRequestError as e:
    check("anthropic embeddings refused", e.body.get("param") == "model")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
