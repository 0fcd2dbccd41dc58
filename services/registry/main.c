/* moda-registry — placeholder main until the service lands. */
#include <stdio.h>
int main(void)
{
    puts("moda-registry " MODA_VERSION);
    return 0;
}
