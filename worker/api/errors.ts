import type { ZodError } from 'zod';
import { formatIssues } from '../../src/config/zod-issues.js';

/** An error the API answers with an OpenAI-style body: {error: {message, type, param, code}}. */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 404 | 405 | 409 | 413 | 429 | 500 | 503,
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

/** `input`: the body, so the message can say what came ("`temperature`: expected a number at most 2, got 7"). */
export function fromZod(err: ZodError, input?: unknown): ApiError {
  const first = err.issues[0]!;
  // OpenAI names the top-level parameter; the message keeps the full path.
  const param = first.path.length ? String(first.path[0]) : null;
  const all = formatIssues(err.issues, input, { all: true });
  return new ApiError(400, all, 'invalid_request_error', param, 'invalid_value');
}
