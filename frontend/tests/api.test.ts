import { describe, expect, it } from 'vitest';
import { ApiError, describeExtra, parseApiError } from '../src/api';

describe('parseApiError', () => {
  it('reads the message and extra of the API error shape', () => {
    const err = parseApiError(400, 'Bad Request', JSON.stringify({ message: 'Validation error', extra: { fields: { identifier: ['This field is required.'] } } }));
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.message).toBe('Validation error');
    expect(describeExtra(err.extra)).toEqual(['identifier: This field is required.']);
  });

  it("falls back to DRF's detail", () => {
    expect(parseApiError(403, 'Forbidden', '{"detail": "Authentication credentials were not provided."}').message).toBe(
      'Authentication credentials were not provided.',
    );
  });

  it('says the status when the body is not JSON (e.g. a proxy error page)', () => {
    const err = parseApiError(502, 'Bad Gateway', '<html>oops</html>');
    expect(err.message).toBe('502 Bad Gateway');
    expect(err.extra).toEqual({});
  });

  it('knows when the session is gone', () => {
    expect(parseApiError(403, '', '{"message": "Log in first.", "extra": {}}').isUnauthenticated).toBe(true);
    expect(parseApiError(403, '', '{"message": "Authentication credentials were not provided.", "extra": {}}').isUnauthenticated).toBe(true);
    expect(parseApiError(403, '', '{"message": "You do not have permission to perform this action.", "extra": {}}').isUnauthenticated).toBe(false);
  });
});

describe('describeExtra', () => {
  it('flattens nested field errors and skips empty values', () => {
    expect(describeExtra({ images: ['Unsupported file type: notes.txt'], patient: { id: ['Unknown patient.'] }, empty: [] })).toEqual([
      'images: Unsupported file type: notes.txt',
      'patient.id: Unknown patient.',
    ]);
  });

  it('does not prefix non-field errors', () => {
    expect(describeExtra({ fields: { non_field_errors: ['Wrong username or password.'] } })).toEqual(['Wrong username or password.']);
  });
});
