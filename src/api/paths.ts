import { GROUP, VERSION } from './types';

/** REST paths of the operator's resources, built from the group/version constants. */

const GROUP_VERSION_PATH = `/apis/${GROUP}/${VERSION}`;

const join = (collection: string, name?: string) => (name ? `${collection}/${name}` : collection);

/** MasterKeys (cluster-scoped): the collection, or one by name. */
export const masterKeysPath = (name?: string) => join(`${GROUP_VERSION_PATH}/masterkeys`, name);

/** DataKeys of a namespace (all namespaces when undefined), or one by name. */
export const dataKeysPath = (namespace?: string, name?: string) =>
  join(
    namespace === undefined
      ? `${GROUP_VERSION_PATH}/datakeys`
      : `${GROUP_VERSION_PATH}/namespaces/${namespace}/datakeys`,
    name,
  );

/** Secrets of a namespace (all namespaces when undefined), or one by name. */
export const secretsPath = (namespace?: string, name?: string) =>
  join(
    namespace === undefined ? '/api/v1/secrets' : `/api/v1/namespaces/${namespace}/secrets`,
    name,
  );
