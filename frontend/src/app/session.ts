// Who is logged in, and what their role may do. The backend enforces the same rules.
import type { Role, User } from '../api';

let current: User | null = null;

export function currentUser(): User | null {
  return current;
}

export function setCurrentUser(user: User | null): void {
  current = user;
}

const WRITERS: Role[] = ['hematologist', 'admin'];

export function canCreatePatient(user: User | null): boolean {
  return !!user && WRITERS.includes(user.role);
}

export function canUpload(user: User | null): boolean {
  return !!user && WRITERS.includes(user.role);
}

export function canAnalyze(user: User | null): boolean {
  return !!user && WRITERS.includes(user.role);
}
