/*
 * admin/errors — an administrator's request refused for a reason they can fix: the API answers
 * with its status code and its message as it is (admin/api.ts's error handler).
 */
export class AdminError extends Error {
  constructor(
    readonly statusCode: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string): AdminError => new AdminError(400, message);
export const notFound = (message: string): AdminError => new AdminError(404, message);
export const conflict = (message: string): AdminError => new AdminError(409, message);
