import type { ZodError } from 'zod';

/** An error the API answers with an OpenAI-style body: {error: {message, type, param, code}}. */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 413 | 429 | 500 | 503,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | number | null = null,
  ) {
    super(message);
  }

  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function fromZod(err: ZodError): ApiError {
  const first = err.issues[0]!;
  // OpenAI names the top-level parameter; the message keeps the full path.
  const param = first.path.length ? String(first.path[0]) : null;
  const all = err.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`).join('; ');
  return new ApiError(400, all, 'invalid_request_error', param, 'invalid_value');
}
