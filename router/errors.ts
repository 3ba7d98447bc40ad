/** OpenAI-style error responses: {"error": {"message", "type", "param", "code"}}. */
export function openAIError(status: number, message: string, type = 'invalid_request_error', code: string | null = null, param: string | null = null): Response {
  return new Response(JSON.stringify({ error: { message, type, param, code } }), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}
