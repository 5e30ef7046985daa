// Who is logged in, and what they may do: the API's permission list decides, the role is the fallback.
// The backend enforces the same rules; this only hides actions a user can't take.
import type { Role, User } from '../api';

let current: User | null = null;

export function currentUser(): User | null {
  return current;
}

export function setCurrentUser(user: User | null): void {
  current = user;
}

const WRITERS: Role[] = ['hematologist', 'admin'];

function may(user: User | null, permission: string): boolean {
  if (!user) return false;
  if (user.permissions && user.permissions.length) return user.permissions.includes(permission);
  return user.role !== null && WRITERS.includes(user.role);
}

export const canCreatePatient = (user: User | null): boolean => may(user, 'patients.add_patient');
export const canUpload = (user: User | null): boolean => may(user, 'slides.add_slide');
export const canAnalyze = (user: User | null): boolean => may(user, 'slides.analyze_slide');
export const canSignOff = (user: User | null): boolean => may(user, 'slides.signoff_slide');
export const canReclassify = (user: User | null): boolean => may(user, 'cells.reclassify_cell');
export const canAddCells = (user: User | null): boolean => may(user, 'cells.add_cell');
export const canMoveCells = (user: User | null): boolean => may(user, 'cells.change_cell');
export const canDeleteCells = (user: User | null): boolean => may(user, 'cells.delete_cell');
export const canDeleteSlide = (user: User | null): boolean => may(user, 'slides.delete_slide');
export const canRetrain = (user: User | null): boolean => may(user, 'registry.add_modelversion');
export const canPromoteModel = (user: User | null): boolean => may(user, 'registry.change_modelversion');
export const canDeletePatient = (user: User | null): boolean => may(user, 'patients.delete_patient');
